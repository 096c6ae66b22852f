"""Export a plain-text corpus for the character-level transformer.

CPython ships the text of its own reference topics (`pydoc_data/topics.py`, ~700 KB of English and
code) with every interpreter, so this needs no network. Topics are joined in sorted key order, so
the file is identical on every machine with the same Python version.
"""

import sys

from pydoc_data.topics import topics


def main(path: str) -> None:
    text = "\n\n".join(topics[key] for key in sorted(topics))
    data = text.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    print(f"corpus: {len(data)} bytes from pydoc_data.topics -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
