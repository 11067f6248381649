//! The sandbox through the real daemon, tried as an attacker or an unlucky operator would:
//! no script can wedge, slow down or poison another contact's automation.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const AWA: &str = "221771234567";
const BINTA: &str = "221772223344";
const CHEIKH: &str = "221773334455";

/// Answers "ok <text>" to every message; "boom" makes it wedge in a `<close>` handler (the
/// reproduction of the issue), "find" runs a pattern that never returns without interruption.
const ON_MESSAGE: &str = r#"
return {
  run = function(msg)
    if msg.text == "boom" then
      local g <close> = setmetatable({}, { __close = function() while true do end end })
      while true do end
    elseif msg.text == "find" then
      string.rep("a", 3e5):find(".-.-.-.-.-.-b")
    elseif msg.text == "rep" then
      string.rep("", 1 << 62)
    end
    env.whatsapp.send_text(msg.from, "ok " .. msg.text)
  end,
}
"#;

async fn daemon(scripts: &[(&str, &str)], scripts_extra: &str, extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    for (path, source) in scripts {
        put_script(dir.path(), path, source);
    }
    let budget = if scripts_extra.contains("cpu_budget") {
        ""
    } else {
        "cpu_budget = \"150ms\"\n"
    };
    let text = config_text(dir.path(), DRY_RUN, extra)
        .replace("[scripts]\n", &format!("[scripts]\n{budget}{scripts_extra}\n"));
    TestDaemon::start_in(dir, text).await
}

fn replies(outbound: &[Value]) -> Vec<String> {
    outbound
        .iter()
        .map(|m| m["raw"]["text"]["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_handler_that_loops_stops_at_the_budget_and_every_other_contact_is_answered() {
    let d = daemon(&[("on_message.lua", ON_MESSAGE)], "workers = 1", "").await;
    // Awa's scripts try to hold the only worker three ways; Binta writes in between.
    for (i, text) in ["boom", "find", "rep"].iter().enumerate() {
        d.deliver_ok(&text_delivery(AWA, &format!("wamid.A{i}"), text, now()))
            .await;
        d.deliver_ok(&text_delivery(BINTA, &format!("wamid.B{i}"), "bonjour", now()))
            .await;
    }
    for i in 0..3 {
        let m = d.dispatched(AWA, &format!("wamid.A{i}")).await;
        let err = m["script"]["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains("CPU budget of 150 ms exceeded"), "{m}");
        assert!(
            err.contains("on_message.lua:"),
            "the error names the script's line: {err}"
        );
        assert_ne!(m["script"]["quarantined"], true, "interrupted, not wedged: {m}");
        let b = d.dispatched(BINTA, &format!("wamid.B{i}")).await;
        assert!(b["script"]["error"].is_null(), "{b}");
    }
    assert_eq!(replies(&d.outbound_of(BINTA).await), ["ok bonjour"; 3]);
    assert!(d.outbound_of(AWA).await.is_empty(), "a failed run sends nothing");
    // Still healthy, one worker as configured, and Awa's next message runs normally.
    let (code, h) = d.api("/healthz").await;
    assert_eq!(code, 200, "{h}");
    d.deliver_ok(&text_delivery(AWA, "wamid.A9", "merci", now())).await;
    d.dispatched(AWA, "wamid.A9").await;
    assert_eq!(replies(&d.outbound_of(AWA).await), ["ok merci"]);

    // After a restart nothing runs again: the outcomes were committed.
    let d = d.restart().await;
    d.settled().await;
    let m = d.dispatched(AWA, "wamid.A0").await;
    assert!(m["script"]["error"].as_str().unwrap().contains("CPU budget"), "{m}");
    assert_eq!(d.outbound_of(AWA).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_wedges_at_its_top_level_does_not_stop_check_serve_or_reload() {
    let wedging = "local g <close> = setmetatable({}, { __close = function() while true do end end })\n\
                   while true do end\nreturn { run = function() end }\n";
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "on_message.lua", ON_MESSAGE);
    put_script(dir.path(), "buttons/bad.lua", &format!("-- match: ^x$\n{wedging}"));
    let text = config_text(dir.path(), DRY_RUN, "");
    std::fs::write(dir.path().join("walua.toml"), &text).unwrap();

    // walua check ends, and names the script and the budget.
    let out = Command::new(env!("CARGO_BIN_EXE_walua"))
        .arg("--config")
        .arg(dir.path().join("walua.toml"))
        .arg("check")
        .output()
        .expect("walua check runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("buttons/bad.lua"), "{report}");
    assert!(report.contains("CPU budget"), "{report}");

    // serve listens and answers; the bad script is reported, the others work.
    let d = TestDaemon::start_in(dir, text).await;
    let (code, h) = d.api("/healthz").await;
    assert_eq!(code, 200, "{h}");
    assert!(h["scripts"]["last_errors"].to_string().contains("CPU budget"), "{h}");
    d.deliver_ok(&text_delivery(AWA, "wamid.T1", "salut", now())).await;
    d.dispatched(AWA, "wamid.T1").await;

    // Hot reload of a wedging edit keeps the last good version; so does the reload API.
    d.write_script("on_message.lua", wedging);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, r) = d.api_post("/api/scripts/reload", &json!({})).await;
    assert_eq!(code, 200, "{r}");
    assert!(r.to_string().contains("CPU budget"), "{r}");
    d.deliver_ok(&text_delivery(AWA, "wamid.T2", "encore", now())).await;
    d.dispatched(AWA, "wamid.T2").await;
    assert_eq!(replies(&d.outbound_of(AWA).await), ["ok salut", "ok encore"]);
    // SIGTERM-equivalent stop returns.
    tokio::time::timeout(Duration::from_secs(20), d.stop())
        .await
        .expect("the daemon stops");
}

/// A TCP server that accepts connections and never answers: an Odoo that hangs.
async fn hanging_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (url, task)
}

const WAITS_ON_ODOO: &str = r#"
return {
  run = function(msg)
    if msg.text == "facture" then
      local ok, err = pcall(env.odoo.call, "res.partner", "search_read", {{}}, { limit = 1 })
      env.whatsapp.send_text(msg.from, "odoo: " .. tostring(err))
      return
    end
    env.whatsapp.send_text(msg.from, "ok " .. msg.text)
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_waiting_on_a_hung_odoo_holds_no_one_else_and_is_cut_at_run_timeout() {
    let (odoo, _server) = hanging_server().await;
    let odoo_section = format!(
        "[odoo]\nurl = \"{odoo}\"\ndb = \"db\"\nlogin = \"bot\"\napi_key = \"k\"\ntimeout = \"120s\"\npoll_interval = \"1h\"\n"
    );
    let d = daemon(
        &[("on_message.lua", WAITS_ON_ODOO)],
        "workers = 1\nrun_timeout = \"3s\"",
        &odoo_section,
    )
    .await;
    // Awa's and Cheikh's runs wait on Odoo (each holds a worker); Binta writes after them.
    d.deliver_ok(&text_delivery(AWA, "wamid.O1", "facture", now())).await;
    d.deliver_ok(&text_delivery(CHEIKH, "wamid.O2", "facture", now())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.deliver_ok(&text_delivery(BINTA, "wamid.O3", "bonjour", now())).await;
    let b = d.dispatched(BINTA, "wamid.O3").await;
    assert!(b["script"]["error"].is_null(), "{b}");
    // Binta was answered while the two others still wait (no outcome yet).
    let a = d.messages_of(AWA).await;
    assert!(
        a.iter().all(|m| !m["script"].is_object()),
        "Awa's run should still be waiting on Odoo: {a:?}"
    );
    assert_eq!(replies(&d.outbound_of(BINTA).await), ["ok bonjour"]);
    // The waits end at run_timeout, with an error the script could catch and report.
    for (who, wamid) in [(AWA, "wamid.O1"), (CHEIKH, "wamid.O2")] {
        let m = d.dispatched(who, wamid).await;
        assert!(
            m["script"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("run timeout of 3 s"),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cannot_poison_the_next_through_pairs_or_the_env_tables() {
    let poison = r#"
return {
  run = function(msg)
    if msg.text == "poison" then
      local _, s = pairs(string)
      if type(s) == "table" then rawset(s, "upper", function() return "pwned" end) end
      local _, w = pairs(env.whatsapp)
      if type(w) == "table" then rawset(w, "send_text", function() end) end
      for k, v in pairs(env) do if type(v) == "table" then pcall(rawset, v, "send_text", nil) end end
      env.whatsapp.send_text = function() end
      string.upper = function() return "pwned" end
      return
    end
    env.whatsapp.send_text(msg.from, string.upper(msg.text))
  end,
}
"#;
    let d = daemon(&[("on_message.lua", poison)], "workers = 1", "").await;
    d.deliver_ok(&text_delivery(AWA, "wamid.P1", "poison", now())).await;
    d.dispatched(AWA, "wamid.P1").await;
    d.deliver_ok(&text_delivery(BINTA, "wamid.P2", "bonjour", now())).await;
    d.dispatched(BINTA, "wamid.P2").await;
    assert_eq!(replies(&d.outbound_of(BINTA).await), ["BONJOUR"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_run_writes_through_env_counts_against_its_memory_budget() {
    let hog = r#"
return {
  run = function(msg)
    if msg.text == "big" then
      env.store.set("big", string.rep("x", 10 * 1024 * 1024))
    elseif msg.text == "many" then
      for i = 1, 40 do env.store.set("k" .. i, string.rep("y", 1000 * 1000)) end
    elseif msg.text == "sends" then
      for i = 1, 20000 do env.whatsapp.send_text(msg.from, string.rep("z", 4000)) end
    end
    env.store.set("last", msg.text)
    env.whatsapp.send_text(msg.from, "ok " .. msg.text)
  end,
}
"#;
    // A generous CPU budget: copying 32 MiB in a debug build must not hit it first.
    let d = daemon(&[("on_message.lua", hog)], "cpu_budget = \"5s\"", "").await;
    for (i, text) in ["big", "many", "sends"].iter().enumerate() {
        let wamid = format!("wamid.M{i}");
        d.deliver_ok(&text_delivery(AWA, &wamid, text, now())).await;
        let m = d.dispatched(AWA, &wamid).await;
        let err = m["script"]["error"].as_str().unwrap_or_default().to_string();
        let want = if *text == "big" {
            "the limit is 1048576 (1 MiB)"
        } else {
            "memory budget of 32 MiB exceeded"
        };
        assert!(err.contains(want), "{text}: {err}");
        assert!(err.contains("on_message.lua:"), "{text}: {err}");
    }
    // Nothing of the failed runs was kept: no send, no store value.
    assert!(d.outbound_of(AWA).await.is_empty());
    d.deliver_ok(&text_delivery(AWA, "wamid.M9", "petit", now())).await;
    d.dispatched(AWA, "wamid.M9").await;
    assert_eq!(replies(&d.outbound_of(AWA).await), ["ok petit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_error_names_the_file_and_line() {
    let errors = r#"
return {
  run = function(msg)
    local x = 1
    if msg.text == "table" then error({ code = 42 }) end
    if msg.text == "yield" then coroutine.yield() end
    if msg.text == "nil" then error() end
    if msg.text == "loop" then while true do pcall(string.rep, "x", 10) end end
  end,
}
"#;
    let d = daemon(&[("on_message.lua", errors)], "", "").await;
    for (i, (text, want)) in [
        ("table", ":5: error object is a table value"),
        ("yield", ":6: attempt to yield from outside a coroutine"),
        ("nil", ":7: error object is a nil value"),
        ("loop", ":8: CPU budget of 150 ms exceeded"),
    ]
    .iter()
    .enumerate()
    {
        let wamid = format!("wamid.E{i}");
        d.deliver_ok(&text_delivery(AWA, &wamid, text, now())).await;
        let m = d.dispatched(AWA, &wamid).await;
        let err = m["script"]["error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.ends_with(&format!("on_message.lua{want}")) || err.contains(&format!("on_message.lua{want}")),
            "{text}: {err}"
        );
        assert!(!err.contains("sandbox-prelude"), "{err}");
    }
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    let start = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "walua did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn message(http: &reqwest::Client, base: &str, contact: &str, wamid: &str) -> Option<Value> {
    let r = http
        .get(format!("{base}/api/conversations/{contact}/messages?limit=100"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    let body: Value = r.json().await.ok()?;
    body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["wamid"] == wamid)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_was_running_when_walua_died_twice_is_quarantined_not_run_again() {
    let (odoo, _server) = hanging_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let odoo_section = format!(
        "[odoo]\nurl = \"{odoo}\"\ndb = \"db\"\nlogin = \"bot\"\napi_key = \"k\"\ntimeout = \"120s\"\npoll_interval = \"1h\"\n"
    );
    let text = config_text(dir.path(), DRY_RUN, &odoo_section).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("walua.toml"), &text).unwrap();
    // Stands for a script that crashes walua (or hangs it until systemd kills it).
    put_script(dir.path(), "on_message.lua", WAITS_ON_ODOO);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let body = serde_json::to_vec(&text_delivery(AWA, "wamid.K1", "facture", now())).unwrap();
    let sig = walua::webhook::signature::sign(APP_SECRET.as_bytes(), &body);
    for attempt in 0..2 {
        let mut child = spawn_serve(dir.path());
        wait_up(&http, &base).await;
        if attempt == 0 {
            let r = http
                .post(format!("{base}/webhook"))
                .header("x-hub-signature-256", &sig)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        // The run starts (and waits on Odoo); then walua dies.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            message(&http, &base, AWA, "wamid.K1")
                .await
                .is_some_and(|m| !m["script"].is_object())
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Third start: the message is quarantined, with the reason, and never run again.
    let mut child = spawn_serve(dir.path());
    wait_up(&http, &base).await;
    let start = Instant::now();
    let m = loop {
        if let Some(m) = message(&http, &base, AWA, "wamid.K1").await
            && m["script"].is_object()
        {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no outcome");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(m["script"]["quarantined"], true, "{m}");
    assert!(
        m["script"]["error"].as_str().unwrap().contains("walua stopped 2 times"),
        "{m}"
    );
    // The operator can run it again once, on purpose.
    let id = m["id"].as_u64().unwrap();
    let r = http
        .post(format!("{base}/api/messages/{id}/dispatch"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Programs that kept catching the budget error, each for minutes, before the interrupt was
/// raised at every C return (a `pcall` in a coroutine returns through its continuation, not
/// through the call) and only the message handler's own return was spared (not every call of
/// the function that happens to be the handler). Each one catches the error in a loop whose
/// count hook always fires inside the protected call.
const CATCHERS: &[(&str, &str)] = &[
    (
        // The program of proptest_lua_budget's seed 4 (one chunk, as the proptest runs it).
        "the proptest's seed 4",
        "coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()\n\
         while true do do local co = coroutine.create(function() coroutine.wrap(function() \
         table.concat(setmetatable({}, { __index = tostring }), '', 1, 1 << 60) end)() end) \
         coroutine.resume(co) coroutine.close(co) end end",
    ),
    (
        "pcall in a coroutine resumed by coroutine.resume",
        "local co = coroutine.create(function() while true do pcall(function() while true do end end) end end)\n\
         coroutine.resume(co)",
    ),
    (
        "xpcall with a Lua handler in a coroutine",
        "coroutine.wrap(function()\n\
           while true do xpcall(function() while true do end end, function(m) return m end) end\n\
         end)()",
    ),
    (
        "pcall of pcall in a coroutine",
        "coroutine.wrap(function() while true do pcall(pcall, function() while true do end end) end end)()",
    ),
    (
        "a goto loop around pcall in a coroutine",
        "coroutine.wrap(function() ::a:: pcall(function() ::b:: goto b end) goto a end)()",
    ),
    (
        "pcall returned by a tail call in a coroutine",
        "coroutine.wrap(function()\n\
           local function f() return pcall(function() while true do end end) end\n\
           while true do f() end\n\
         end)()",
    ),
    (
        "a table.sort comparator under pcall in a coroutine",
        "coroutine.wrap(function()\n\
           while true do pcall(table.sort, {3, 1, 2, 5, 4}, function(a, b) while true do end end) end\n\
         end)()",
    ),
    (
        "a __tostring run by string.format('%s') under pcall in a coroutine",
        "coroutine.wrap(function()\n\
           local o = setmetatable({}, { __tostring = function() while true do end end })\n\
           while true do pcall(string.format, '%s', o) end\n\
         end)()",
    ),
    (
        "an __index metamethod under pcall in a coroutine",
        "coroutine.wrap(function()\n\
           local o = setmetatable({}, { __index = function() while true do end end })\n\
           while true do pcall(function() return o.x end) end\n\
         end)()",
    ),
    (
        "a <close> handler under pcall in a coroutine",
        "coroutine.wrap(function()\n\
           while true do\n\
             pcall(function()\n\
               local x <close> = setmetatable({}, { __close = function() while true do end end })\n\
               while true do end\n\
             end)\n\
           end\n\
         end)()",
    ),
    (
        "coroutines nested 3 deep",
        "coroutine.wrap(function() coroutine.wrap(function() coroutine.wrap(function()\n\
           while true do pcall(function() while true do end end) end\n\
         end)() end)() end)()",
    ),
    (
        "coroutines nested 100 deep, each level catching in a loop",
        "local function nest(n)\n\
           if n == 0 then while true do pcall(function() while true do end end) end end\n\
           coroutine.wrap(function() while true do pcall(nest, n - 1) end end)()\n\
         end\n\
         nest(100)",
    ),
    (
        "pcall as xpcall's message handler, called in a loop by the protected function",
        "xpcall(function() while true do pcall(function() while true do end end) end end, pcall)",
    ),
    (
        "pcall as xpcall's message handler, inside a coroutine",
        "coroutine.wrap(function()\n\
           xpcall(function() while true do pcall(function() while true do end end) end end, pcall)\n\
         end)()",
    ),
    (
        "a coroutine as xpcall's message handler, catching in a loop",
        "xpcall(function() while true do end end,\n\
           coroutine.wrap(function() while true do pcall(function() while true do end end) end end))",
    ),
];

/// Runs `program` in a fresh bare sandbox on its own thread; `Err` when it is still running
/// after `hang` (the thread is left spinning: the test fails anyway).
fn run_bare(program: &'static str, budget: Duration, hang: Duration) -> Result<(Duration, String), String> {
    use walua::script::sandbox::{Limits, RunError, Sandbox};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let limits = Limits {
            cpu: budget,
            ..Limits::default()
        };
        let sb = Sandbox::new(limits, std::path::PathBuf::from("/nonexistent-walua-lib")).expect("sandbox");
        let f = sb.compile("scripts/attack.lua", program).expect("compiles");
        let start = Instant::now();
        let result = sb.run::<()>(&f, &sb.fresh_env().unwrap(), ());
        let took = start.elapsed();
        let verdict = match &result {
            Err(RunError::Cpu { location: Some(l), .. }) if l.starts_with("scripts/attack.lua:") => {
                // The sandbox is usable afterwards.
                let check = sb.compile("scripts/check.lua", "return string.upper('a')").unwrap();
                match sb.run::<String>(&check, &sb.fresh_env().unwrap(), ()) {
                    Ok(v) if v == "A" => Ok((took, format!("{result:?}"))),
                    other => Err(format!("the next run failed: {other:?}")),
                }
            }
            _ => Err(format!("not a located CPU budget error: {result:?}")),
        };
        let _ = tx.send(verdict);
    });
    rx.recv_timeout(hang)
        .map_err(|_| format!("still running {hang:?} after its start"))?
}

#[test]
fn no_way_of_catching_the_budget_error_keeps_a_bare_sandbox_running() {
    // The same margins as proptest_lua_budget: far above the measured overrun, far below
    // "for ever".
    const BUDGET: Duration = Duration::from_millis(40);
    const HANG: Duration = Duration::from_secs(3);
    let mut failed = Vec::new();
    for (what, program) in CATCHERS {
        match run_bare(program, BUDGET, HANG) {
            Ok((took, result)) => eprintln!("{what}: stopped after {took:?}: {result}"),
            Err(e) => failed.push(format!("{what}: {e}\n{program}")),
        }
    }
    assert!(failed.is_empty(), "held the sandbox:\n\n{}", failed.join("\n\n"));
}

/// Keys chosen to land in one slot of Lua's own number hashes (integers: `i % (2^k - 1)`;
/// floats: 31 bits of the mantissa). The rehash that reinserts them ran O(n²) inside one
/// instruction, where the budget cannot interrupt; `load` built its constants table the same
/// way. The vendored Lua now seeds and mixes number hashes (`vendor/lua-src`, `ltable.c`).
const HASH_FLOODS: &[(&str, u64, &str)] = &[
    (
        "integer keys that are multiples of 2^18 - 1",
        40,
        "while true do local t = {} for i = 1, 200000 do t[i * 262143] = true end end",
    ),
    (
        "integer keys that are multiples of 2^17 - 1, looked up",
        40,
        "while true do\n\
           local t = {}\n\
           for i = 1, 100000 do t[i * 131071] = i end\n\
           local s = 0\n\
           for i = 1, 100000 do s = s + t[i * 131071] end\n\
         end",
    ),
    (
        "float keys that differ only in the low bits of their mantissa",
        40,
        "while true do local t = {} for i = 1, 200000 do t[1.5 + i * 2^-50] = true end end",
    ),
    (
        // A larger budget, so that the chunk is built before the budget runs out.
        "a chunk of 60,000 such float constants, compiled by load",
        1000,
        "local parts = {'return {'}\n\
         for i = 1, 60000 do parts[#parts + 1] = string.format('%.17g,', 1.5 + i * 2^-50) end\n\
         parts[#parts + 1] = '}'\n\
         local src = table.concat(parts)\n\
         while true do assert(load(src)) end",
    ),
];

#[test]
fn keys_chosen_to_collide_in_lua_hashes_do_not_hold_a_bare_sandbox() {
    // Before the seeded hashes each of these held the sandbox for seconds in one instruction.
    const HANG: Duration = Duration::from_secs(3);
    let mut failed = Vec::new();
    for (what, budget_ms, program) in HASH_FLOODS {
        match run_bare(program, Duration::from_millis(*budget_ms), HANG) {
            Ok((took, result)) => eprintln!("{what}: stopped after {took:?}: {result}"),
            Err(e) => failed.push(format!("{what}: {e}\n{program}")),
        }
    }
    assert!(failed.is_empty(), "held the sandbox:\n\n{}", failed.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcall_loop_in_a_coroutine_is_interrupted_not_wedged_and_the_others_are_answered() {
    let catcher = r#"
return {
  run = function(msg)
    if msg.text == "catch" then
      coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()
    end
    env.whatsapp.send_text(msg.from, "ok " .. msg.text)
  end,
}
"#;
    let d = daemon(&[("on_message.lua", catcher)], "workers = 1", "").await;
    d.deliver_ok(&text_delivery(AWA, "wamid.C1", "catch", now())).await;
    d.deliver_ok(&text_delivery(BINTA, "wamid.C2", "bonjour", now())).await;
    let m = d.dispatched(AWA, "wamid.C1").await;
    let err = m["script"]["error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("CPU budget of 150 ms exceeded"), "{m}");
    assert!(
        err.contains("on_message.lua:"),
        "the error names the script's line: {err}"
    );
    assert_ne!(m["script"]["quarantined"], true, "interrupted, not wedged: {m}");
    let b = d.dispatched(BINTA, "wamid.C2").await;
    assert!(b["script"]["error"].is_null(), "{b}");
    assert_eq!(replies(&d.outbound_of(BINTA).await), ["ok bonjour"]);
}
