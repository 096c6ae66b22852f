//! gradmesh-e2e: end-to-end tests that run the real `gradmesh` and `gradmesh-sim` binaries as
//! separate processes on loopback. Every test is bounded in time and waits on events, not sleeps.
