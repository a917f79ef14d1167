//! Ring reads, appends, chain checks and resets over arbitrary ring
//! contents, control words and reader positions.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shmif::fuzzing::ring_ops(data));
