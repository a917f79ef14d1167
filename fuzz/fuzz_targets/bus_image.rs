//! `shmif dump`'s walk and a live reader over an arbitrary bus image.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shmif::fuzzing::bus_image(data));
