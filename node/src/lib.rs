//! gradmesh-node: the node's shell around the sans-IO protocol core — the libp2p network layer
//! behind an actix actor ([`net`]), the training node's actors ([`mesh`]), a local process
//! cluster for the demo, benchmarks and tests ([`cluster`]), and the in-memory protocol demo
//! ([`demo`]). [`error_line`] is how every error reaches an operator: one line. Protocol rules live in `gradmesh-protocol`, never here; this crate holds I/O,
//! clocks and actors.
//! Bytes from peers never reach an `unwrap`: outside tests the lints below forbid it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cluster;
pub mod demo;
pub mod mesh;
pub mod net;

/// An error and its sources on one line, each cause once: libp2p's errors and ours (`{source}`
/// in a `thiserror` message) often repeat their source in their own message, and a chain
/// printed cause by cause would say it twice.
#[must_use]
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if text.is_empty() {
            text = cause_text;
        } else if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("starting the node")]
    struct Context(#[source] Repeats);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error = Context(Repeats(io));
        assert_eq!(
            super::error_line(&error),
            "starting the node: cannot listen: address in use"
        );
        // An error with no message of its own (libp2p's transport errors) is its cause.
        #[derive(Debug, thiserror::Error)]
        #[error("")]
        struct Silent(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "Timeout has been reached");
        assert_eq!(super::error_line(&Silent(io)), "Timeout has been reached");
    }
}
