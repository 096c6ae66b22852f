//! `gradmesh_node::net::fuzzing::announcement` on arbitrary bytes: refused or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = gradmesh_node::net::fuzzing::announcement(bytes);
});
