//! An extended bus header, reader table and ring from arbitrary bytes,
//! through every pure parser and validator of the extended format and the
//! ring code at the header's geometry.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shmif::fuzzing::ext_image(data));
