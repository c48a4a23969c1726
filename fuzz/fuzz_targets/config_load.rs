//! Fuzzes the configuration loader (YAML, KubeEdge wrappers, environment overrides after a NUL); the same entry point runs in the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mediamesh_config::fuzz::config_load(data);
});
