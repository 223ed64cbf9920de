//! The locality experiment at CI size: real libtorrent clients in two ISPs download through the
//! real `p4p-tracker` binary, once with `--policy random` and once with `--policy p4p`, three
//! times each; the kernel counts the bytes between ISPs.
//!
//! The harness is `tests/experiment/locality.py` (see tests/experiment/README.md); this test runs
//! it with `--preset ci` (2 ISPs, 8 leechers + 2 seeds per ISP, numwant 4, 8 MiB, upload capped
//! at 1 MiB/s per client, staggered joins, 3 runs per policy) and asserts on its JSON output:
//! - every leecher of every run completed, with the right SHA-256;
//! - with `p4p`, inter-ISP bytes are at most half of what `random` moves in the same run
//!   (median over the 3 runs of the per-run ratio);
//! - the same again with the tracker pointed at a standard RFC 7285 ALTO server
//!   (`--standard-alto`: a PID per ISP, numerical routingcost, nothing private), with p4p moving
//!   at most a quarter of random's inter-ISP bytes.
//!
//! Needs: root (network namespaces, nftables), `/usr/bin/python3` with Debian's
//! `python3-libtorrent`, `nft` (nftables), `ip` (iproute2), and a built tracker:
//! `$P4P_TRACKER_BIN`, else `target/release/p4p-tracker`, else `target/debug/p4p-tracker`
//! (`cargo build --release -p p4p-tracker` first; `scripts/test` does). So the test is
//! `#[ignore = "needs ..."]`: a plain `cargo test` reports it as ignored. `scripts/test` runs it
//! (`--include-ignored`); when something is missing then, the test fails and says what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
/// The whole CI run (3 runs x 2 policies) takes about 2 minutes on 2 cores.
const TIMEOUT: Duration = Duration::from_secs(480);
/// Standard-ALTO mode: p4p/random inter-ISP bytes, at most: 4x fewer (issue 15's CI target).
/// Before the seeded fill cap (`selection.seeded_fill_cap`), CI experiments measured medians of
/// 4.1x-5.3x with same-run ratios down to 3.5x, and 4.7x (4.4x-6.4x) again in session 8: the
/// first leecher of each ISP, whose PID held only its 2 seeds, had its answer filled with 2
/// peers of the other ISP. With the cap three CI experiments (session 8, same hour) measured
/// medians of 35.7x, 18.1x and 113x; the lowest of their 9 same-run ratios was 12.5x. The old
/// rule (2.5x) and the rule without the cap (down to 3.5x) can fail this bound.
const MAX_STANDARD_ALTO_RATIO: f64 = 0.25;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn tracker_bin(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("P4P_TRACKER_BIN") {
        return Some(PathBuf::from(p));
    }
    ["target/release/p4p-tracker", "target/debug/p4p-tracker"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
}

/// Fails the test: a prerequisite is missing.
fn unavailable(reason: &str) -> ! {
    panic!(
        "the locality experiment cannot run: {reason} (scripts/test installs the packages; \
         it needs root)"
    );
}

/// Runs `cmd` to completion, killing it after `limit`. Returns (exit code, stdout).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the harness");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the harness") {
            break Some(st);
        }
        if start.elapsed() > limit {
            // SIGTERM first: the harness then stops its clients and tracker and deletes its
            // namespaces. SIGKILL (our own child only) if it does not exit in 30 s; the next
            // run of the harness sweeps what a killed one left.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(30) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = reader.join().unwrap_or_default();
    match status {
        Some(st) => (st.code(), out),
        None => panic!("the harness did not finish within {limit:?}; output so far:\n{out}"),
    }
}

#[test]
#[ignore = "needs root, python3-libtorrent, nftables, iproute2, a release p4p-tracker (scripts/test)"]
fn p4p_moves_at_most_half_the_inter_isp_bytes_of_random() {
    let median = same_run_ratios("ours", &[]);
    assert!(
        median <= 0.5,
        "p4p moved {median:.3} of random's inter-ISP bytes (median of same-run ratios); want <= 0.5"
    );
}

/// The same CI experiment with the tracker pointed (`--alto`) at a standard RFC 7285 server
/// (`tests/experiment/alto_server.py`: an IRD, one network map with a PID per ISP and a default
/// PID, one numerical routingcost map; nothing private). Locality must come from the costs
/// alone: p4p moves at most a quarter of random's inter-ISP bytes.
#[test]
#[ignore = "needs root, python3-libtorrent, nftables, iproute2, a release p4p-tracker (scripts/test)"]
fn p4p_with_a_standard_alto_server_moves_at_most_a_quarter_of_random() {
    let median = same_run_ratios("standard", &["--standard-alto"]);
    assert!(
        median <= MAX_STANDARD_ALTO_RATIO,
        "with a standard ALTO server, p4p moved {median:.3} of random's inter-ISP bytes \
         (median of same-run ratios); want <= {MAX_STANDARD_ALTO_RATIO:.3}"
    );
}

/// Runs the CI preset with `extra` harness arguments, checks every run (all leechers complete,
/// right SHA-256) and returns the median over the 3 runs of p4p/random inter-ISP bytes.
fn same_run_ratios(label: &str, extra: &[&str]) -> f64 {
    // One experiment at a time: the tests of this file run on parallel threads, and two swarms
    // at once would share the CPU (the assertions are on bytes, but each run has a deadline).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = workspace_root();
    let harness = root.join("tests/experiment/locality.py");
    if !Path::new(PYTHON).exists() {
        unavailable("/usr/bin/python3 is missing (apt-get install python3 python3-libtorrent)");
    }
    let Some(tracker) = tracker_bin(&root) else {
        unavailable(
            "no p4p-tracker binary: run `cargo build --release -p p4p-tracker` or set P4P_TRACKER_BIN",
        );
    };
    // Prerequisites first: exit 2 and a MISSING line when something is not there.
    let (code, out) = run_bounded(
        Command::new(PYTHON)
            .arg(&harness)
            .arg("--check-prereqs")
            .arg("--tracker")
            .arg(&tracker)
            .current_dir(&root),
        Duration::from_secs(60),
    );
    if code == Some(2) {
        unavailable(out.trim());
    }
    assert_eq!(code, Some(0), "prerequisite check failed: {out}");

    let outdir =
        std::env::temp_dir().join(format!("p4p-locality-ci-{label}-{}", std::process::id()));
    let (code, out) = run_bounded(
        Command::new(PYTHON)
            .arg(&harness)
            .args([
                "--preset",
                "ci",
                "--mode",
                "loopback",
                "--keep-logs",
                "--out",
            ])
            .arg(&outdir)
            .arg("--tracker")
            .arg(&tracker)
            .args(extra)
            .current_dir(&root),
        TIMEOUT,
    );
    println!("{out}");
    assert_eq!(
        code,
        Some(0),
        "the harness failed (exit {code:?}); logs in {}",
        outdir.display()
    );
    let text = std::fs::read_to_string(outdir.join("results.json")).expect("results.json");
    let doc = json::parse(&text).expect("results.json is JSON");

    let runs = doc
        .get("runs")
        .and_then(json::Value::as_array)
        .expect("runs");
    let mut inter: BTreeMap<(u64, String), f64> = BTreeMap::new();
    for r in runs {
        let policy = r
            .get("policy")
            .and_then(json::Value::as_str)
            .expect("policy");
        let run = r.get("run").and_then(json::Value::as_f64).expect("run") as u64;
        let complete = r
            .get("complete")
            .and_then(json::Value::as_f64)
            .unwrap_or(-1.0);
        let leechers = r
            .get("leechers")
            .and_then(json::Value::as_f64)
            .unwrap_or(0.0);
        assert!(
            leechers >= 16.0,
            "run {run} {policy}: {leechers} leechers, want >= 16"
        );
        assert_eq!(
            r.get("all_complete").and_then(json::Value::as_bool),
            Some(true),
            "run {run} {policy}: {complete} of {leechers} leechers completed; logs in {}",
            outdir.display()
        );
        assert_eq!(
            r.get("all_sha256_ok").and_then(json::Value::as_bool),
            Some(true),
            "run {run} {policy}: a download has the wrong SHA-256"
        );
        let b = r
            .get("bytes")
            .and_then(|b| b.get("inter_isp"))
            .and_then(json::Value::as_f64)
            .expect("bytes.inter_isp");
        inter.insert((run, policy.to_string()), b);
    }
    let mut ratios = Vec::new();
    for ((run, policy), &p4p) in &inter {
        if policy == "p4p" {
            let random = inter[&(*run, "random".to_string())];
            assert!(random > 0.0, "run {run}: random moved no inter-ISP bytes");
            ratios.push(p4p / random);
        }
    }
    assert_eq!(ratios.len(), 3, "expected 3 runs per policy, got {inter:?}");
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("{label}: inter-ISP bytes p4p/random per run: {ratios:?} (median {median:.3})");
    let _ = std::fs::remove_dir_all(&outdir);
    median
}

/// A small JSON reader (the harness's output only), so the test needs no extra dependency.
mod json {
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Value>),
        Obj(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn as_array(&self) -> Option<&Vec<Value>> {
            match self {
                Value::Arr(a) => Some(a),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Str(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Num(n) => Some(*n),
                _ => None,
            }
        }
        pub fn as_bool(&self) -> Option<bool> {
            match self {
                Value::Bool(b) => Some(*b),
                _ => None,
            }
        }
    }

    pub fn parse(s: &str) -> Result<Value, String> {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        fn eat(&mut self, lit: &str) -> Result<(), String> {
            if self.b[self.i..].starts_with(lit.as_bytes()) {
                self.i += lit.len();
                Ok(())
            } else {
                Err(format!("expected {lit} at {}", self.i))
            }
        }
        fn value(&mut self) -> Result<Value, String> {
            self.ws();
            match self.b.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    let mut kv = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Obj(kv));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.eat(":")?;
                        kv.push((k, self.value()?));
                        self.ws();
                        if self.b.get(self.i) == Some(&b',') {
                            self.i += 1;
                        } else {
                            self.eat("}")?;
                            return Ok(Value::Obj(kv));
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Arr(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        if self.b.get(self.i) == Some(&b',') {
                            self.i += 1;
                        } else {
                            self.eat("]")?;
                            return Ok(Value::Arr(a));
                        }
                    }
                }
                Some(b'"') => Ok(Value::Str(self.string()?)),
                Some(b't') => self.eat("true").map(|_| Value::Bool(true)),
                Some(b'f') => self.eat("false").map(|_| Value::Bool(false)),
                Some(b'n') => self.eat("null").map(|_| Value::Null),
                Some(b'N') => self.eat("NaN").map(|_| Value::Num(f64::NAN)),
                Some(b'I') => self.eat("Infinity").map(|_| Value::Num(f64::INFINITY)),
                Some(_) => {
                    let start = self.i;
                    while self.i < self.b.len()
                        && b"+-0123456789.eEInfity".contains(&self.b[self.i])
                    {
                        self.i += 1;
                    }
                    let t =
                        std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
                    t.parse::<f64>()
                        .map(Value::Num)
                        .map_err(|e| format!("bad number {t:?} at {start}: {e}"))
                }
                None => Err("unexpected end".into()),
            }
        }
        fn string(&mut self) -> Result<String, String> {
            self.eat("\"")?;
            let mut out = String::new();
            loop {
                let Some(&c) = self.b.get(self.i) else {
                    return Err("unterminated string".into());
                };
                self.i += 1;
                match c {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let e = *self.b.get(self.i).ok_or("bad escape")?;
                        self.i += 1;
                        match e {
                            b'n' => out.push('\n'),
                            b't' => out.push('\t'),
                            b'r' => out.push('\r'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'u' => {
                                let hex = std::str::from_utf8(
                                    self.b.get(self.i..self.i + 4).ok_or("bad \\u")?,
                                )
                                .map_err(|e| e.to_string())?;
                                let cp = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                                self.i += 4;
                                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                            }
                            other => out.push(other as char),
                        }
                    }
                    _ => {
                        // Copy one UTF-8 sequence as is.
                        let start = self.i - 1;
                        while self.i < self.b.len() && (self.b[self.i] & 0xC0) == 0x80 {
                            self.i += 1;
                        }
                        out.push_str(
                            std::str::from_utf8(&self.b[start..self.i])
                                .map_err(|e| e.to_string())?,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reads_nested_documents() {
        let v = parse(
            r#"{"a": [1, 2.5e3, -3], "b": {"c": "x\"\u00e9y", "d": true, "e": null}, "f": NaN}"#,
        )
        .unwrap();
        assert_eq!(v.get("a").and_then(Value::as_array).map(Vec::len), Some(3));
        assert_eq!(
            v.get("a").unwrap().as_array().unwrap()[1],
            Value::Num(2500.0)
        );
        assert_eq!(
            v.get("b").and_then(|b| b.get("c")).and_then(Value::as_str),
            Some("x\"éy")
        );
        assert_eq!(
            v.get("b").and_then(|b| b.get("d")).and_then(Value::as_bool),
            Some(true)
        );
        assert!(parse("[1,").is_err());
    }
}
