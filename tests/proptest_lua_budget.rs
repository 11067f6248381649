//! Property test (run in CI): Lua programs generated from a grammar of what holds a Lua
//! state — endless loops, `<close>` handlers, protected calls, coroutines, backtracking
//! patterns, long C calls, metamethods, finalizers — never hold a sandbox past its budget,
//! and leave it usable for the next run. `PROPTEST_CASES=5000 cargo test --release --test
//! proptest_lua_budget` explores the grammar for longer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use walua::script::sandbox::{Limits, RunError, Sandbox};

/// The CPU budget of the generated runs.
const BUDGET: Duration = Duration::from_millis(40);

/// What counts as holding the worker: far above the measured overrun (see the README's
/// "Security" section for the figures), so that a loaded CI machine does not fail it, and far
/// below what an uninterrupted program takes (they run for ever).
const HANG: Duration = Duration::from_secs(3);

fn block(depth: u32) -> BoxedStrategy<String> {
    prop::collection::vec(stmt(depth), 1..4)
        .prop_map(|s| s.join("\n"))
        .boxed()
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("1e3".to_string()),
        Just("3e5".to_string()),
        Just("math.maxinteger - 1".to_string()),
        Just("1 << 62".to_string()),
    ]
}

fn pattern() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        ".-.-.-b",
        "(.-)%1b",
        "a*a*a*a*b",
        ".-.-.-.-.-.-b",
        "[%w]-b",
        "%f[%a]",
    ])
}

fn stmt(depth: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("x = (x or 0) + 1".to_string()),
        Just("while true do end".to_string()),
        Just("collectgarbage()".to_string()),
        Just("error({})".to_string()),
        Just("coroutine.yield()".to_string()),
        (number(), pattern()).prop_map(|(n, p)| format!("string.rep('a', {n}):find('{p}')")),
        (number(), pattern()).prop_map(|(n, p)| format!("for _ in string.rep('a', {n}):gmatch('{p}') do end")),
        number().prop_map(|n| format!("string.rep('', {n}, '')")),
        number().prop_map(|n| format!("table.move({{}}, 1, {n}, 2)")),
        number()
            .prop_map(|n| format!("table.insert(setmetatable({{}}, {{ __len = function() return {n} end }}), 1, 1)")),
        Just("table.concat(setmetatable({}, { __index = tostring }), '', 1, 1 << 60)".to_string()),
        Just("local t = {} for i = 1, 1e5 do t[i] = {} end".to_string()),
        Just("setmetatable({}, { __gc = function() while true do end end })".to_string()),
        Just("local w = setmetatable({}, { __mode = 'k' }) for i = 1, 1e4 do w[{}] = {} end".to_string()),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let inner = block(depth - 1);
    prop_oneof![
        3 => leaf,
        1 => inner.clone().prop_map(|b| format!("while true do\n{b}\nend")),
        1 => (number(), inner.clone()).prop_map(|(n, b)| format!("for i = 1, {n} do\n{b}\nend")),
        2 => inner.clone().prop_map(|b| format!(
            "local c{} <close> = setmetatable({{}}, {{ __close = function()\n{b}\nend }})",
            b.len()
        )),
        2 => inner.clone().prop_map(|b| format!("pcall(function()\n{b}\nend)")),
        1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("xpcall(function()\n{a}\nend, function()\n{b}\nend)")),
        1 => inner.clone().prop_map(|b| format!("coroutine.wrap(function()\n{b}\nend)()")),
        1 => inner.clone().prop_map(|b| format!(
            "do local co = coroutine.create(function()\n{b}\nend)\ncoroutine.resume(co)\ncoroutine.close(co) end"
        )),
        1 => inner.clone().prop_map(|b| format!(
            "table.sort({{3, 1, 2, 5, 4}}, function(a, b)\n{b}\nreturn a < b end)"
        )),
        1 => inner.clone().prop_map(|b| format!(
            "local _ = setmetatable({{}}, {{ __index = function()\n{b}\nend }}).x"
        )),
        1 => inner.clone().prop_map(|b| format!(
            "tostring(setmetatable({{}}, {{ __tostring = function()\n{b}\nreturn '' end }}))"
        )),
        1 => inner.clone().prop_map(|b| format!("load(function()\n{b}\nend)")),
        1 => inner.prop_map(|b| format!("do\n{b}\nend")),
    ]
    .boxed()
}

fn sandbox() -> Sandbox {
    let limits = Limits {
        cpu: BUDGET,
        ..Limits::default()
    };
    Sandbox::new(limits, PathBuf::from("/nonexistent-walua-lib")).expect("sandbox")
}

proptest! {
    // A fixed seed in CI, so that a failure is reproducible; `PROPTEST_RNG_SEED=N` explores
    // another set. Seeds 4 and 19 drew a `pcall` loop in a coroutine that caught the budget
    // error for minutes (closed in `ldo.c`, see WALUA-PATCHES.md; the program is in
    // sandbox_attacks.rs); seeds 1 to 40 pass.
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        rng_seed: match std::env::var_os("PROPTEST_RNG_SEED") {
            Some(_) => ProptestConfig::default().rng_seed,
            None => proptest::test_runner::RngSeed::Fixed(20261130),
        },
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_generated_program_holds_the_sandbox_past_its_budget(program in block(3)) {
        thread_local! {
            static SB: Sandbox = sandbox();
        }
        SB.with(|sb| {
            let f = match sb.compile("scripts/generated.lua", &program) {
                Ok(f) => f,
                Err(_) => return Ok(()),
            };
            let env = sb.fresh_env().expect("env");
            let start = Instant::now();
            let result = sb.run::<()>(&f, &env, ());
            let took = start.elapsed();
            prop_assert!(took < HANG, "held the sandbox {took:?}:\n{program}\n{result:?}");
            if let Err(RunError::Cpu { location, .. }) = &result {
                prop_assert!(
                    location.as_deref().is_some_and(|l| l.starts_with("scripts/generated.lua:")),
                    "budget error without the script's line: {result:?}\n{program}"
                );
            }
            // The sandbox is usable, and unpoisoned, afterwards.
            let check = sb.compile("scripts/check.lua", "return string.upper('a') .. #string.rep('b', 3)").unwrap();
            let v: String = sb.run(&check, &sb.fresh_env().unwrap(), ()).expect("the next run works");
            prop_assert_eq!(v, "A3");
            Ok(())
        })?;
    }
}
