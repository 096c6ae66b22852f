"""Prints Opacus's epsilon for each setting read from stdin.

Input: one setting per line, "q sigma steps delta". Output: one line per setting,
"epsilon best_alpha" in repr precision, computed by Opacus's RDPAccountant with its default
orders (the reference the Rust accountant in federated/src/dp/rdp.rs is tested against by
federated/tests/opacus_parity.rs). Needs opacus in the project venv (scripts/setup.sh).

The per-step RDP of each (q, sigma) is computed once with Opacus's compute_rdp and scaled by the
step count, exactly as RDPAccountant.get_privacy_spent does (compute_rdp multiplies by steps).
"""

import functools
import sys
import warnings

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

ORDERS = RDPAccountant.DEFAULT_ALPHAS


@functools.cache
def rdp_one_step(q: float, sigma: float) -> np.ndarray:
    return np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=ORDERS))


def main() -> None:
    warnings.simplefilter("ignore")  # "optimal order is the largest alpha" is expected for some rows
    for line in sys.stdin:
        fields = line.split()
        if not fields:
            continue
        q, sigma, steps, delta = float(fields[0]), float(fields[1]), int(fields[2]), float(fields[3])
        eps, alpha = get_privacy_spent(orders=ORDERS, rdp=rdp_one_step(q, sigma) * steps, delta=delta)
        print(f"{float(eps)!r} {float(alpha)!r}")


if __name__ == "__main__":
    main()
