#![no_main]

use std::sync::Once;

/// `AsnDb` runs maxminddb under `catch_unwind` and refuses a file that makes it panic; that is
/// the behaviour under test. libFuzzer's panic hook aborts on every panic, caught or not, so
/// this target installs a silent hook once: a panic that `AsnDb` catches is then a refused
/// file, and a panic that escapes still ends the run as a crash (libfuzzer-sys aborts when the
/// target unwinds).
static QUIET: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    p4p_fuzz::targets::asn_db(data)
});
