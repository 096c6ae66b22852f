//! Prometheus metrics: libp2p's own (swarm, gossipsub, identify, Kademlia, ping, bandwidth) plus
//! frame counters, served as OpenMetrics text on `GET /metrics`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use libp2p::metrics::{Metrics, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is answered with 400 and dropped.
const REQUEST_HEAD_BYTES_MAX: usize = 4096;
/// A scrape that takes longer than this is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters the network layer keeps, next to libp2p's.
pub(crate) struct NetMetrics {
    pub(crate) libp2p: Metrics,
    pub(crate) frames_sent: Counter,
    pub(crate) frames_received: Counter,
    pub(crate) frame_bytes_sent: Counter,
    pub(crate) frame_bytes_received: Counter,
    pub(crate) frames_failed_outbound: Counter,
    pub(crate) frames_failed_inbound: Counter,
    pub(crate) lane_frames_sent: Counter,
    pub(crate) lanes_closed: Counter,
    pub(crate) gossip_received: Counter,
    pub(crate) gossip_dropped: Counter,
    pub(crate) peer_bans: Counter,
    pub(crate) slow_peer_disconnects: Counter,
    pub(crate) peers_banned: Gauge,
    pub(crate) inbound_frame_bytes: Gauge,
}

impl NetMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let libp2p = Metrics::new(registry);
        let sub = registry.sub_registry_with_prefix("gradmesh");
        let counter = |sub: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            sub.register(name, help, c.clone());
            c
        };
        let gauge = |sub: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            sub.register(name, help, g.clone());
            g
        };
        Self {
            libp2p,
            frames_sent: counter(sub, "frames_sent", "Frames acknowledged by their receiver"),
            frames_received: counter(sub, "frames_received", "Frames received and handed on"),
            frame_bytes_sent: counter(sub, "frame_bytes_sent", "Meta+payload bytes of sent frames"),
            frame_bytes_received: counter(
                sub,
                "frame_bytes_received",
                "Meta+payload bytes of received frames",
            ),
            frames_failed_outbound: counter(
                sub,
                "frames_failed_outbound",
                "Frames that could not be delivered",
            ),
            frames_failed_inbound: counter(
                sub,
                "frames_failed_inbound",
                "Inbound frames refused or broken (oversized, truncated, timed out)",
            ),
            lane_frames_sent: counter(
                sub,
                "lane_frames_sent",
                "Frames sent over direct lanes (also counted in frames_sent)",
            ),
            lanes_closed: counter(sub, "lanes_closed", "Lanes that broke or were closed"),
            gossip_received: counter(sub, "gossip_received", "Announcements received"),
            gossip_dropped: counter(
                sub,
                "gossip_dropped",
                "Announcements dropped (truncated, or a relayed copy whose signature does not verify)",
            ),
            peer_bans: counter(
                sub,
                "peer_bans",
                "Peers banned for sending what no honest peer sends (undecodable frames or announcements)",
            ),
            slow_peer_disconnects: counter(
                sub,
                "slow_peer_disconnects",
                "Peers disconnected for leaving their announcement queue full for 5 s",
            ),
            peers_banned: gauge(sub, "peers_banned", "Peers banned now"),
            inbound_frame_bytes: gauge(
                sub,
                "inbound_frame_bytes",
                "Bytes reserved by inbound frames being read, within the inbound frame budget",
            ),
        }
    }
}

/// Serves `GET /metrics` on `listener`, one scrape at a time (bounded work per client, and
/// scrapers are few). Runs until the arbiter stops.
pub(crate) async fn serve_metrics(listener: TcpListener, registry: Rc<Registry>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        match tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &registry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics scrape failed"),
            Err(_) => tracing::debug!(%peer, "metrics scrape timed out"),
        }
    }
}

/// Binds the metrics endpoint; the returned address has the real port when 0 was asked for.
pub(crate) async fn bind_metrics(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let response = match route(&head) {
        Route::Metrics => {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(std::io::Error::other)?;
            http_response(
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
        }
        Route::NotFound => http_response("404 Not Found", "text/plain", "not found\n"),
        Route::BadRequest => http_response("400 Bad Request", "text/plain", "bad request\n"),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_BYTES_MAX {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(head)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics"), Some(v)) if v.starts_with(b"HTTP/1.") => Route::Metrics,
        (Some(_), Some(_), Some(v)) if v.starts_with(b"HTTP/1.") => Route::NotFound,
        _ => Route::BadRequest,
    }
}

fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"garbage"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn counters_are_encoded() {
        let mut registry = Registry::default();
        let metrics = NetMetrics::register(&mut registry);
        metrics.frames_sent.inc();
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).expect("encode");
        assert!(body.contains("gradmesh_frames_sent_total 1"), "{body}");
        assert!(body.contains("libp2p_"), "libp2p metrics registered");
    }
}
