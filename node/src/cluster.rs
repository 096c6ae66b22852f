//! A local cluster of `gradmesh node` processes on loopback: spawn, watch their [`Report`]
//! lines, SIGTERM or SIGKILL, and clean up. The multi-process demo, the all-reduce benchmark and the
//! end-to-end tests are built on it. With [`Placement::Netns`] each node instead runs in its own
//! network namespace (the shaped layout of `scripts/netns.sh`), for real-run validation of the
//! simulator.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use crate::mesh::Report;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A process could not be started, or a file created.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The awaited report did not come in time.
    #[error("timed out after {:.1} s waiting for {}", .0.as_secs_f64(), .1)]
    Timeout(Duration, String),
    /// A node exited before it reported a listen address.
    #[error("node {index} exited ({status}) before it listened: {last_line}")]
    StartFailed {
        /// The node.
        index: usize,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The last line of its log.
        last_line: String,
    },
    /// Every node's output closed before the awaited report.
    #[error("all nodes exited while waiting for {0}")]
    Exited(String),
    /// The node index does not exist.
    #[error("no node {0}")]
    NoSuchNode(usize),
}

/// One spawned node.
#[derive(Debug)]
pub struct ClusterNode {
    child: Option<Child>,
    /// Protocol peer id (hex), once reported.
    pub peer: Option<String>,
    /// libp2p peer id, once reported.
    pub transport_peer: Option<String>,
    /// Listen addresses, as reported.
    pub listen: Vec<String>,
    /// Where its stderr (logs) goes.
    pub log: PathBuf,
}

impl ClusterNode {
    /// Whether the process is still running (not killed by us).
    #[must_use]
    pub const fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Where the node processes run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// On this host, listening on the node's default (`/ip4/127.0.0.1/tcp/0`).
    #[default]
    Loopback,
    /// Node `i` runs as `ip netns exec <prefix><i> gradmesh node --listen
    /// /ip4/<subnet>.<i+1>/tcp/0 ...` (`/udp/0/quic-v1` with [`ListenTransport::Quic`]): the layout `scripts/netns.sh up` creates with prefix
    /// `gm` and subnet `10.77.0`. Needs root and the namespaces to exist.
    Netns {
        /// Namespace name prefix (`gm`).
        prefix: String,
        /// First three octets of the IPv4 subnet (`10.77.0`).
        subnet: String,
    },
}

/// The transport the nodes listen on (and so the one the cluster dials: [`Cluster::address`] is
/// a listen address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum ListenTransport {
    /// TCP + noise + yamux (`/ip4/<addr>/tcp/0`), with or without a mesh key.
    #[default]
    Tcp,
    /// QUIC (`/ip4/<addr>/udp/0/quic-v1`); the node accepts it only without a mesh key.
    Quic,
}

impl ListenTransport {
    /// The listen multiaddr on `ip` with a port the kernel picks.
    #[must_use]
    pub fn listen_addr(self, ip: &str) -> String {
        match self {
            Self::Tcp => format!("/ip4/{ip}/tcp/0"),
            Self::Quic => format!("/ip4/{ip}/udp/0/quic-v1"),
        }
    }
}

/// The processes and the merged stream of their reports.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    placement: Placement,
    transport: ListenTransport,
    dir: PathBuf,
    nodes: Vec<ClusterNode>,
    sender: Sender<(usize, Report)>,
    reports: Receiver<(usize, Report)>,
    /// Every report received so far, in arrival order.
    pub history: Vec<(usize, Report)>,
}

impl Cluster {
    /// A cluster running `bin` (the `gradmesh` binary), keeping identities and logs in `dir`.
    ///
    /// # Errors
    /// If `dir` cannot be created.
    pub fn new(bin: &Path, dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let (sender, reports) = channel();
        Ok(Self {
            bin: bin.to_path_buf(),
            placement: Placement::Loopback,
            transport: ListenTransport::Tcp,
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            sender,
            reports,
            history: Vec::new(),
        })
    }

    /// Runs the nodes spawned from now on at `placement` (the default is loopback).
    #[must_use]
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Makes the nodes spawned from now on listen on `transport` (the default is TCP).
    #[must_use]
    pub fn with_transport(mut self, transport: ListenTransport) -> Self {
        self.transport = transport;
        self
    }

    /// The command that starts node `index`: `<bin> node`, prefixed and given a listen
    /// address when the node runs in a namespace or on a transport other than the node's
    /// default (TCP on 127.0.0.1).
    fn node_command(&self, index: usize) -> Command {
        match &self.placement {
            Placement::Loopback => {
                let mut command = Command::new(&self.bin);
                command.arg("node");
                if self.transport != ListenTransport::Tcp {
                    command
                        .arg("--listen")
                        .arg(self.transport.listen_addr("127.0.0.1"));
                }
                command
            }
            Placement::Netns { prefix, subnet } => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &format!("{prefix}{index}")])
                    .arg(&self.bin)
                    .arg("node")
                    .arg("--listen")
                    .arg(
                        self.transport
                            .listen_addr(&format!("{subnet}.{}", index + 1)),
                    );
                command
            }
        }
    }

    /// The nodes spawned so far (running or killed).
    #[must_use]
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// The working directory (identities, logs, checkpoints).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Spawns `gradmesh node --report --identity <dir>/node<i>.key <args>` (a new identity per
    /// node) and waits until it reports a listen address. Returns its index.
    ///
    /// # Errors
    /// If it cannot start or does not report within 60 s.
    pub fn spawn(&mut self, args: &[String]) -> Result<usize, ClusterError> {
        let name = format!("node{}", self.nodes.len());
        self.spawn_as(&name, args)
    }

    /// Like [`Cluster::spawn`] with the identity `<dir>/<identity>.key`: a node restarted under
    /// the same name is the same peer.
    ///
    /// # Errors
    /// If it cannot start or does not report within 60 s.
    pub fn spawn_as(&mut self, identity: &str, args: &[String]) -> Result<usize, ClusterError> {
        let index = self.nodes.len();
        let log = self.dir.join(format!("node{index}.log"));
        let stderr = File::create(&log).map_err(|source| ClusterError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let mut command = self.node_command(index);
        command
            .arg("--report")
            .arg("--identity")
            .arg(self.dir.join(format!("{identity}.key")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: `prctl` is async-signal-safe and touches no memory of ours; it runs in the
        // child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // The node gets SIGTERM (and stops gracefully) if the thread that spawned it
                // dies, however it dies: no orphaned nodes training forever.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| ClusterError::Io {
            what: format!("spawning {}", self.bin.display()),
            source,
        })?;
        if let Some(stdout) = child.stdout.take() {
            let sender = self.sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(report) = serde_json::from_str::<Report>(&line)
                        && sender.send((index, report)).is_err()
                    {
                        return;
                    }
                }
            });
        }
        self.nodes.push(ClusterNode {
            child: Some(child),
            peer: None,
            transport_peer: None,
            listen: Vec::new(),
            log,
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.address(index).is_none() {
            self.check_started(index)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(200));
            match self.wait_for(slice, "a listen address", |i, r| {
                i == index && matches!(r, Report::Listening { .. } | Report::Started { .. })
            }) {
                Err(ClusterError::Timeout(..)) if !left.is_zero() => {}
                Err(ClusterError::Timeout(..)) => {
                    return Err(ClusterError::Timeout(
                        Duration::from_secs(60),
                        "a listen address".into(),
                    ));
                }
                other => {
                    other?;
                }
            }
        }
        Ok(index)
    }

    /// [`ClusterError::StartFailed`] if node `index` has exited (a refused flag or file, say).
    fn check_started(&mut self, index: usize) -> Result<(), ClusterError> {
        let Some(node) = self.nodes.get_mut(index) else {
            return Err(ClusterError::NoSuchNode(index));
        };
        let exited = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        match exited {
            Some(status) => Err(ClusterError::StartFailed {
                index,
                status,
                last_line: std::fs::read_to_string(&node.log)
                    .ok()
                    .and_then(|log| log.lines().last().map(str::to_owned))
                    .unwrap_or_default(),
            }),
            None => Ok(()),
        }
    }

    /// A dialable address of node `index` (`<listen>/p2p/<transport peer>`).
    #[must_use]
    pub fn address(&self, index: usize) -> Option<String> {
        let node = self.nodes.get(index)?;
        Some(format!(
            "{}/p2p/{}",
            node.listen.first()?,
            node.transport_peer.as_ref()?
        ))
    }

    /// Waits for the first new report satisfying `pred`, recording every report on the way.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] or [`ClusterError::Exited`].
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(usize, &Report) -> bool,
    ) -> Result<(usize, Report), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok((index, report)) => {
                    self.note(index, &report);
                    self.history.push((index, report.clone()));
                    if pred(index, &report) {
                        return Ok((index, report));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ClusterError::Timeout(timeout, what.to_owned()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ClusterError::Exited(what.to_owned()));
                }
            }
        }
    }

    fn note(&mut self, index: usize, report: &Report) {
        let Some(node) = self.nodes.get_mut(index) else {
            return;
        };
        match report {
            Report::Started {
                peer,
                transport_peer,
                ..
            } => {
                node.peer = Some(peer.clone());
                node.transport_peer = Some(transport_peer.clone());
            }
            Report::Listening { addr } => node.listen.push(addr.clone()),
            _ => {}
        }
    }

    /// SIGKILLs node `index` (no chance to say goodbye).
    ///
    /// # Errors
    /// [`ClusterError::NoSuchNode`].
    pub fn kill(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(index)
            .ok_or(ClusterError::NoSuchNode(index))?;
        if let Some(mut child) = node.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Sends node `index` SIGTERM: it stops gracefully (final checkpoint, summary, exit 0).
    /// [`Cluster::wait_exit`] waits for it.
    ///
    /// # Errors
    /// [`ClusterError::NoSuchNode`], or the signal could not be sent.
    pub fn terminate(&mut self, index: usize) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get(index)
            .ok_or(ClusterError::NoSuchNode(index))?;
        let Some(pid) = node
            .child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
        else {
            return Ok(());
        };
        // SAFETY: `kill` takes plain integers; the child is ours and not yet reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } == -1 {
            return Err(ClusterError::Io {
                what: format!("sending SIGTERM to node {index}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Waits up to `timeout` for node `index` to exit by itself (a stop condition, or after
    /// [`Cluster::terminate`]) and returns how it exited.
    ///
    /// # Errors
    /// [`ClusterError::NoSuchNode`] (or already killed), [`ClusterError::Timeout`].
    pub fn wait_exit(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> Result<ExitStatus, ClusterError> {
        let node = self
            .nodes
            .get_mut(index)
            .ok_or(ClusterError::NoSuchNode(index))?;
        let child = node.child.as_mut().ok_or(ClusterError::NoSuchNode(index))?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = child.try_wait().map_err(|source| ClusterError::Io {
                what: format!("waiting for node {index}"),
                source,
            })?;
            if let Some(status) = status {
                node.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(
                    timeout,
                    format!("node {index} to exit"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills every node.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn loopback_runs_the_binary_directly() {
        let dir = std::env::temp_dir().join(format!("gm-cluster-lo-{}", std::process::id()));
        let cluster = Cluster::new(Path::new("/opt/gradmesh"), &dir).unwrap();
        let command = cluster.node_command(2);
        assert_eq!(command.get_program(), "/opt/gradmesh");
        assert_eq!(args(&command), ["node"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn netns_runs_node_i_in_its_namespace_on_its_address() {
        let dir = std::env::temp_dir().join(format!("gm-cluster-ns-{}", std::process::id()));
        let cluster = Cluster::new(Path::new("/opt/gradmesh"), &dir)
            .unwrap()
            .with_placement(Placement::Netns {
                prefix: "gm".into(),
                subnet: "10.77.0".into(),
            });
        let command = cluster.node_command(3);
        assert_eq!(command.get_program(), "ip");
        assert_eq!(
            args(&command),
            [
                "netns",
                "exec",
                "gm3",
                "/opt/gradmesh",
                "node",
                "--listen",
                "/ip4/10.77.0.4/tcp/0"
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn quic_listens_on_udp_in_both_placements() {
        let dir = std::env::temp_dir().join(format!("gm-cluster-quic-{}", std::process::id()));
        let lo = Cluster::new(Path::new("/opt/gradmesh"), &dir)
            .unwrap()
            .with_transport(ListenTransport::Quic);
        assert_eq!(
            args(&lo.node_command(0)),
            ["node", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]
        );
        let ns = lo.with_placement(Placement::Netns {
            prefix: "gm".into(),
            subnet: "10.77.0".into(),
        });
        assert_eq!(
            args(&ns.node_command(1)),
            [
                "netns",
                "exec",
                "gm1",
                "/opt/gradmesh",
                "node",
                "--listen",
                "/ip4/10.77.0.2/udp/0/quic-v1"
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
