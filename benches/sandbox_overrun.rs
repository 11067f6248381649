//! How far past its CPU budget a run goes before it stops, for each script that used to hold a
//! Lua worker: `cargo bench --bench sandbox_overrun`. Each attack runs `ROUNDS` times with a
//! 200 ms budget, alone and then with `LOAD` threads burning CPU (on a 2-core machine, 2
//! threads: the run gets about half a core). Prints the median and worst wall time per attack.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walua::script::sandbox::{Limits, Sandbox};

const ROUNDS: usize = 5;
const LOAD: usize = 2;

const ATTACKS: &[(&str, &str)] = &[
    ("loop", "while true do end"),
    (
        "<close> loop",
        "local g <close> = setmetatable({}, { __close = function() while true do end end })\nwhile true do end",
    ),
    (
        "<close> in coroutine",
        "local co = coroutine.create(function()\n local g <close> = setmetatable({}, { __close = function() while true do end end })\n while true do end\nend)\ncoroutine.resume(co)\ncoroutine.close(co)\nwhile true do end",
    ),
    ("pattern .-.-b", "return string.rep('a', 1500):find('.-.-b')"),
    ("pattern x6", "return string.rep('a', 3e5):find('.-.-.-.-.-.-b')"),
    (
        "plain find",
        "local s = string.rep('a', 4e6)\nreturn s:find(string.rep('a', 2e6) .. 'b', 1, true)",
    ),
    ("string.rep('', 2^62)", "return string.rep('', 1 << 62)"),
    ("table.move 2^62", "table.move({}, 1, math.maxinteger - 1, 2)"),
    (
        "concat via C __index",
        "return table.concat(setmetatable({}, { __index = tostring }), '', 1, 1 << 60)",
    ),
    (
        "full GC per call",
        "local t = {}\nfor i = 1, 2e5 do t[i] = { i } end\nwhile true do collectgarbage('collect') end",
    ),
    (
        "xpcall loop handler",
        "while true do xpcall(error, function() while true do end end) end",
    ),
];

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let budget = Duration::from_millis(200);
    let limits = Limits {
        cpu: budget,
        ..Limits::default()
    };
    let sb = Sandbox::new(limits, PathBuf::from("/nonexistent")).expect("sandbox");
    for loaded in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let hogs: Vec<_> = (0..if loaded { LOAD } else { 0 })
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        println!(
            "\n{} (budget {} ms, {ROUNDS} rounds)",
            if loaded { "with 2 CPU-burning threads" } else { "alone" },
            budget.as_millis()
        );
        let mut worst_ratio: f64 = 0.0;
        for (name, src) in ATTACKS {
            let f = sb.compile("scripts/attack.lua", src).expect("compiles");
            let mut times: Vec<Duration> = (0..ROUNDS)
                .map(|_| {
                    let env = sb.fresh_env().expect("env");
                    let start = Instant::now();
                    let r = sb.run::<()>(&f, &env, ());
                    assert!(r.is_err(), "{name} ended without an error");
                    start.elapsed()
                })
                .collect();
            times.sort();
            let (median, worst) = (times[ROUNDS / 2], times[ROUNDS - 1]);
            worst_ratio = worst_ratio.max(worst.as_secs_f64() / budget.as_secs_f64());
            println!(
                "  {name:<24} median {:>7.1} ms   worst {:>7.1} ms",
                median.as_secs_f64() * 1e3,
                worst.as_secs_f64() * 1e3
            );
        }
        println!("  worst / budget: {worst_ratio:.2}");
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            let _ = h.join();
        }
    }
}
