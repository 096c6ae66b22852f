//! gradmesh-sim: a discrete-event simulator that drives the same protocol state machines as the
//! `gradmesh` node, on a simulated clock with bandwidth, latency, loss, compute and churn models.
//! It never depends on tokio, libp2p or LibTorch: time is simulated, and compute is a model.
