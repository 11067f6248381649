//! Sandboxed Lua execution core.
//!
//! A [`Sandbox`] owns one Lua 5.4 state ([`mlua::Lua`]) in which operator scripts run with a
//! restricted set of globals and with CPU and memory budgets.
//!
//! # Isolation model
//!
//! * Only the `base`, `string`, `table`, `math`, `utf8`, `coroutine` and `os` libraries are
//!   opened, and of `os` only `time`, `date`, `clock` and `difftime` are exposed. `io`, `debug`,
//!   `package`, `dofile`, `loadfile`, `string.dump`, `warn` and the rest of `os` are never
//!   reachable. `string.dump` is also removed from the real string library, which is the
//!   `__index` of the shared string metatable.
//! * At construction a private *template* of safe globals is built. It is never handed to a
//!   script. [`Sandbox::fresh_env`] builds a brand-new globals table per run from it: plain
//!   values are shared (functions are immutable to scripts, there is no `debug`), library tables
//!   (`string`, `table`, ...) are per-run empty tables that read through to the shared ones
//!   (`__metatable = false`), so `string.upper = nil` or `rawset(string, "x", 1)` only affects
//!   the run that did it. `_G` points to the fresh table.
//! * `getmetatable` returns `nil` for strings, so the shared string metatable cannot be reached
//!   or mutated. `setmetatable` refuses metatables with a `__gc` field (finalizers could run
//!   outside of any run, i.e. outside the CPU budget).
//! * `load` only accepts text chunks and, unless an environment is passed explicitly, gives the
//!   chunk the environment of the run that created that `load` (each environment has its own
//!   `load` closure). `require` only loads `lib_dir/<a/b>.lua` for a name matching
//!   `^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`, runs it in the caller's environment and caches the
//!   result per environment (i.e. per run). The compiled chunk is kept per file while the file
//!   is unchanged (same inode, length and modification time), so a module is read and compiled
//!   once, not on every run; each run still executes it afresh with its own `_ENV`.
//! * `print` goes to `tracing::info!` with the calling chunk's name; `collectgarbage` only
//!   honours `"count"`, `"collect"`, `"step"` and `"isrunning"` (other options are no-ops).
//!
//! # Budgets
//!
//! * CPU: Lua and C time of a run, waits inside `env.*` excluded, plus a wall-clock cap
//!   (`scripts.run_timeout`). A global instruction-count hook (inherited by every coroutine)
//!   and the timekeeper thread set the state's interrupt flag once a budget is over; the
//!   patched VM then raises `"<file>:<line>: CPU budget exceeded"` at the next instruction
//!   batch, after every C call and inside the library's long loops, and runs no more script
//!   code (`__close`, `xpcall` handlers), so `pcall` cannot swallow it. See
//!   [`super::interrupt`].
//! * Memory: [`mlua::Lua::set_memory_limit`] caps the *whole* Lua state (the baseline of the
//!   libraries is ~100 KiB). An allocation beyond it fails with a Lua memory error (Lua runs an
//!   emergency full GC before giving up, so garbage left from earlier runs does not count).
//!   After a memory error the sandbox runs a full GC so that it is usable for the next run.
//!
//! # Threading
//!
//! `Sandbox` is `Send` (mlua's `send` feature) but meant to be used by one thread at a time.
//! The daemon runs a fixed pool of N dedicated OS threads (not tokio blocking tasks), each
//! owning one `Sandbox` for its whole life; script jobs are sent to the pool over a channel and
//! results come back over a oneshot channel. Lua therefore never runs on, nor blocks, a tokio
//! runtime worker, and a script that burns its whole CPU budget only occupies its own pool
//! thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{
    Error, FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState,
};

use super::interrupt::{Interrupt, RunClock};

/// How many VM instructions run between two checks of the CPU deadline.
///
/// Note: with any count hook installed, Lua 5.4 runs every instruction through its "trap" path,
/// which roughly halves the speed of hot Lua loops (measured: 3e6-iteration loop 22 ms vs
/// 11 ms without hook) independently of this value (10_000 or 100_000 measure the same), so a
/// small value costs nothing extra and keeps the overrun after the deadline to microseconds.
pub const HOOK_INSTRUCTIONS: u32 = 1000;

/// Maximum length of one `print` line sent to the log.
const MAX_PRINT_LEN: usize = 4096;

/// Resource budgets of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lua and C execution time of one run, waits inside `env.*` excluded (default 200 ms).
    pub cpu: Duration,
    /// Memory cap of the Lua state in bytes (default 32 MiB); what a run writes through
    /// `env.*` (store values, send payloads, uploads) counts against it too.
    pub memory: usize,
    /// Wall-clock cap of one run, waits included (default 60 s: a slow Odoo PDF render).
    pub run_timeout: Duration,
}

/// The default `scripts.run_timeout`.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu: Duration::from_millis(200),
            memory: 32 * 1024 * 1024,
            run_timeout: DEFAULT_RUN_TIMEOUT,
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// A Lua error; `message` starts with `file:line:` when Lua knows it (no traceback).
    #[error("{message}")]
    Lua { message: String },
    /// The CPU budget was exceeded; `location` is `file:line` of the code that was running.
    #[error("{}", located(.location, format!("CPU budget of {} ms exceeded", .budget.as_millis())))]
    Cpu { budget: Duration, location: Option<String> },
    /// The wall-clock cap (`scripts.run_timeout`) was reached, waits included.
    #[error("{}", located(.location, format!("run timeout of {} s reached (scripts.run_timeout)", .limit.as_secs_f64())))]
    Timeout { limit: Duration, location: Option<String> },
    /// The memory budget was exceeded.
    #[error("memory budget of {} exceeded", fmt_bytes(*.budget))]
    Memory { budget: usize },
}

fn located(location: &Option<String>, msg: String) -> String {
    match location {
        Some(loc) => format!("{loc}: {msg}"),
        None => msg,
    }
}

fn fmt_bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    const KIB: usize = 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// What a run wrote through `env.*` so far (store values, send payloads, uploads), charged
/// to its memory budget with what the Lua state holds. Stored as Lua app data.
struct Written {
    bytes: Cell<usize>,
    /// The memory budget.
    limit: usize,
}

/// One sandboxed Lua state. See the module docs.
pub struct Sandbox {
    lua: Lua,
    make_env: Function,
    limits: Limits,
    clock: Arc<RunClock>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The timekeeper must not touch the state once it is closed.
        self.clock.detach();
    }
}

// The daemon moves sandboxes into dedicated pool threads.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Sandbox>();
};

/// Lua side of the sandbox setup. It runs once per state with an empty environment (so the
/// closures it creates never depend on the real globals, which are emptied afterwards) and
/// receives: the real globals, the template to fill, and the Rust helpers.
const PRELUDE: &str = r##"
local G, T, load_module, print_fn = ...
local type, next, error, select, rawget, ipairs = G.type, G.next, G.error, G.select, G.rawget, G.ipairs
local raw_load = G.load
local raw_setmetatable, raw_getmetatable, raw_gc = G.setmetatable, G.getmetatable, G.collectgarbage
local sbyte = G.string.byte

local function copy(src, names)
  local t = {}
  if names then
    for _, k in ipairs(names) do t[k] = src[k] end
  else
    for k, v in next, src do t[k] = v end
  end
  return t
end

-- pcall and friends need no wrapper: once a run is interrupted, the VM raises again as soon as
-- they (C functions) return, so a script cannot swallow the budget error.
for _, k in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
    "tostring", "type", "rawequal", "rawlen", "rawget", "rawset", "xpcall", "_VERSION" }) do
  T[k] = G[k]
end
T.print = print_fn
T.getmetatable = function(v)
  if type(v) == "string" then return nil end
  return raw_getmetatable(v)
end
T.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed", 2)
  end
  return raw_setmetatable(t, mt)
end
T.collectgarbage = function(opt, ...)
  opt = opt or "collect"
  if opt == "count" or opt == "collect" or opt == "step" or opt == "isrunning" then
    return raw_gc(opt, ...)
  end
  return 0
end

-- The real string table is the __index of the shared string metatable.
G.string.dump = nil
T.string = copy(G.string)
T.table = copy(G.table)
T.math = copy(G.math)
T.utf8 = copy(G.utf8)
T.coroutine = copy(G.coroutine)
T.os = copy(G.os, { "time", "date", "clock", "difftime" })

-- Completes the globals of one run (the Rust side generates the table constructor for T).
return T, function(env)
  env._G = env
  env.load = function(chunk, name, mode, ...)
    if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
      return nil, "load: binary chunks are not allowed"
    end
    if select("#", ...) == 0 then
      return raw_load(chunk, name, "t", env)
    end
    return raw_load(chunk, name, "t", (...))
  end
  local loaded, loading = {}, {}
  env.require = function(name)
    local m = loaded[name]
    if m ~= nil then return m end
    if type(name) ~= "string" then
      error("require: module name must be a string", 2)
    end
    if loading[name] then
      error("require: circular require of module '" .. name .. "'", 2)
    end
    local f, err = load_module(name)
    if not f then error(err, 2) end
    loading[name] = true
    m = f(env, name)
    loading[name] = nil
    if m == nil then m = true end
    loaded[name] = m
    return m
  end
  return env
end
"##;

impl Sandbox {
    /// Creates a sandbox whose `require` loads modules from `lib_dir`.
    pub fn new(limits: Limits, lib_dir: PathBuf) -> Result<Sandbox, Error> {
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE | StdLib::OS;
        let lua = Lua::new_with(libs, LuaOptions::new())?;

        let mut main_state = std::ptr::null_mut();
        // SAFETY: only reads the pointer of the state's main thread, which lives as long as
        // `lua`; the clock is detached in `Drop` before `lua` is closed.
        let clock = unsafe {
            lua.exec_raw::<()>((), |state| main_state = state)?;
            RunClock::new(main_state)
        };
        lua.set_app_data(clock.clone());
        lua.set_app_data(Written {
            bytes: Cell::new(0),
            limit: limits.memory,
        });
        let hook = HookTriggers::new().every_nth_instruction(HOOK_INSTRUCTIONS);
        let hook_clock = clock.clone();
        // The hook never returns an error (mlua would unwind inside the hook, running
        // `__close` handlers with hooks off): it sets the interrupt flag, and the patched VM
        // raises once the hook has returned.
        lua.set_global_hook(hook, move |_, _| {
            hook_clock.check(Instant::now());
            Ok(VmState::Continue)
        })?;

        let lib_display = lib_dir.display().to_string();
        let modules = RefCell::new(HashMap::new());
        let load_module = lua.create_function(move |lua, name: Value| {
            Ok(match load_module(lua, &lib_dir, &lib_display, &modules, &name) {
                Ok(f) => (Some(f), None),
                Err(msg) => (None, Some(msg)),
            })
        })?;
        let print = lua.create_function(lua_print)?;

        let globals = lua.globals();
        let template = lua.create_table()?;
        let (template, finish): (Table, Function) = lua
            .load(PRELUDE)
            .set_name("=sandbox-prelude")
            .set_mode(ChunkMode::Text)
            .set_environment(lua.create_table()?)
            .call((globals.clone(), template, load_module, print))?;
        let make_env = env_builder(&lua, &template, finish)?;
        // Nothing may run against the real globals: a chunk that was compiled but never given
        // an environment sees an empty table.
        globals.clear()?;

        lua.gc_collect()?;
        lua.set_memory_limit(limits.memory)?;
        Ok(Sandbox {
            lua,
            make_env,
            limits,
            clock,
        })
    }

    /// The run clock of this sandbox's Lua state (the worker pool watches it for wedges).
    pub fn clock(&self) -> &Arc<RunClock> {
        &self.clock
    }

    /// The underlying Lua state, e.g. to create values or functions for an environment.
    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// The budgets of this sandbox.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a text chunk. `chunk_name` is a path such as `scripts/buttons/x.lua`; errors
    /// read `scripts/buttons/x.lua:12: message`. Binary chunks are refused.
    pub fn compile(&self, chunk_name: &str, source: &str) -> Result<Function, Error> {
        self.lua
            .load(source)
            .set_name(format!("@{chunk_name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
    }

    /// A brand-new globals table for one run (safe globals, per-run copies of the library
    /// tables, `_G`, and per-run `load`/`require`). The caller adds its own values (`env`,
    /// `message`, ...) afterwards.
    pub fn fresh_env(&self) -> Result<Table, Error> {
        self.make_env.call(())
    }

    /// The Lua function that [`Sandbox::fresh_env`] calls, for Rust callbacks that need a
    /// fresh environment of their own (e.g. rendering a template from inside a run).
    pub fn env_factory(&self) -> Function {
        self.make_env.clone()
    }

    /// Runs a compiled chunk with `env` as its globals (`_ENV`), under the budgets.
    ///
    /// The chunk's `_ENV` upvalue is re-pointed with [`Function::set_environment`], so a chunk
    /// is compiled once and reused across runs; closures created by an earlier run keep the
    /// environment of that run.
    pub fn run<R: FromLuaMulti>(&self, f: &Function, env: &Table, args: impl IntoLuaMulti) -> Result<R, RunError> {
        if let Err(e) = f.set_environment(env.clone()) {
            return Err(self.classify(e));
        }
        let res = self.call(f, args);
        if matches!(res, Err(RunError::Memory { .. })) {
            // The environment may hold whatever the bomb stored in globals.
            let _ = env.clear();
            let _ = self.lua.gc_collect();
        }
        res
    }

    /// Calls a Lua function (e.g. a closure returned by a chunk, which keeps the chunk's
    /// environment) under the budgets. A call from inside a run (a Rust callback rendering a
    /// template) runs under that run's budgets.
    pub fn call<R: FromLuaMulti>(&self, f: &Function, args: impl IntoLuaMulti) -> Result<R, RunError> {
        let outer = self.clock.begin(self.limits.cpu, self.limits.run_timeout);
        if outer {
            self.written().bytes.set(0);
        }
        let result = f.call::<R>(args);
        let (interrupted, first_location) = if outer {
            let report = self.clock.end();
            (report.interrupted, report.location)
        } else {
            (self.clock.interrupted(), None)
        };
        match (result, interrupted) {
            (Ok(v), None) => Ok(v),
            (result, Some(why)) => {
                // The VM skips walua's own chunks when it records the location, unless no
                // script frame was on the stack.
                let location = first_location
                    .filter(|l| l.rsplit_once(':').is_some_and(|(file, _)| !is_internal_chunk(file)))
                    .or_else(|| result.err().and_then(|e| script_location(&describe(&e))));
                Err(match why {
                    Interrupt::Cpu => RunError::Cpu {
                        budget: self.limits.cpu,
                        location,
                    },
                    Interrupt::WallClock => RunError::Timeout {
                        limit: self.limits.run_timeout,
                        location,
                    },
                })
            }
            (Err(e), None) => Err(self.classify(e)),
        }
    }

    fn written(&self) -> mlua::AppDataRef<'_, Written> {
        self.lua
            .app_data_ref::<Written>()
            .expect("sandbox app data is set in Sandbox::new")
    }

    fn classify(&self, e: Error) -> RunError {
        if is_memory_error(&e) {
            let _ = self.lua.gc_collect();
            let _ = self.lua.gc_collect();
            RunError::Memory {
                budget: self.limits.memory,
            }
        } else {
            tracing::debug!(target: "walua::script", error = %e, "lua error");
            RunError::Lua { message: describe(&e) }
        }
    }
}

/// Generates and compiles a function that builds one run's globals from `template` with a
/// single pre-sized table constructor with constant keys. Each library table (`string`,
/// `table`, `math`, …) becomes an empty per-run table that reads through to the shared copy
/// made by the prelude (one metatable per library, `__metatable = false`, `__pairs` over the
/// library through a closure, never handing out the shared copy itself): what a run assigns
/// or `rawset`s into `string` stays in that run, and nothing reaches the shared copy. Copying every library function per run cost about as much as
/// the rest of a button dispatch.
fn env_builder(lua: &Lua, template: &Table, finish: Function) -> Result<Function, Error> {
    fn is_ident(k: &str) -> bool {
        let mut b = k.bytes();
        b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    }

    let globals = lua.globals();
    let mut values = vec![
        Value::Function(finish),
        globals.get::<Value>("setmetatable")?,
        globals.get::<Value>("next")?,
    ];
    let mut metatables = String::new();
    let mut ctor = String::from("{ ");
    for pair in template.pairs::<String, Value>() {
        let (k, v) = pair?;
        if !is_ident(&k) {
            return Err(Error::runtime(format!("sandbox: unexpected global key {k:?}")));
        }
        let is_lib = matches!(v, Value::Table(_));
        values.push(v);
        let n = values.len();
        if is_lib {
            metatables.push_str(&format!(
                "local mt{n} = {{ __index = v{n}, __pairs = function(t) return function(_, k) return next(v{n}, k) end, t, nil end, __metatable = false }}\n"
            ));
            ctor.push_str(&format!("{k} = setmetatable({{}}, mt{n}), "));
        } else {
            ctor.push_str(&format!("{k} = v{n}, "));
        }
    }
    ctor.push('}');
    let names: Vec<String> = (4..=values.len()).map(|i| format!("v{i}")).collect();
    let source = format!(
        "local finish, setmetatable, next, {} = ...\n{metatables}return function() return finish({ctor}) end",
        names.join(", ")
    );
    lua.load(source)
        .set_name("=sandbox-env")
        .set_mode(ChunkMode::Text)
        .set_environment(lua.create_table()?)
        .call(mlua::MultiValue::from_vec(values))
}

/// Waits for `fut` — I/O from a Rust callback (an Odoo call, a media upload) — without
/// charging the wait to the current run's CPU budget. The wait ends at the run's wall-clock
/// cap (`scripts.run_timeout`) with an error naming it.
pub fn wait_outside_budget<T>(
    lua: &Lua,
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let clock = lua.app_data_ref::<Arc<RunClock>>().map(|c| c.clone());
    let Some(clock) = clock else {
        return Ok(handle.block_on(fut));
    };
    let remaining = clock.remaining();
    let result = clock.waiting(|| match remaining {
        Some(left) => handle
            .block_on(async { tokio::time::timeout(left, fut).await })
            .map_err(|_| "the run's wall-clock cap (scripts.run_timeout) was reached while waiting".to_string()),
        None => Ok(handle.block_on(fut)),
    });
    if result.is_err() {
        // The run ends here: the script may catch the error, but not run on past its cap.
        clock.interrupt(Interrupt::WallClock);
    }
    result
}

/// Charges `bytes` written through `env.*` (a store value, a send's payload, an upload) to
/// the current run's memory budget, with what the Lua state holds.
pub fn charge_written(lua: &Lua, bytes: usize) -> Result<(), Error> {
    let Some(written) = lua.app_data_ref::<Written>() else {
        return Ok(());
    };
    let total = written.bytes.get().saturating_add(bytes);
    let limit = written.limit;
    if total.saturating_add(lua.used_memory()) > limit {
        return Err(Error::runtime(format!(
            "memory budget of {} exceeded: this run wrote {} through env.* and its Lua state holds {}",
            fmt_bytes(limit),
            fmt_bytes_approx(total),
            fmt_bytes_approx(lua.used_memory())
        )));
    }
    written.bytes.set(total);
    Ok(())
}

fn fmt_bytes_approx(n: usize) -> String {
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

fn lua_print(lua: &Lua, args: Variadic<Value>) -> mlua::Result<()> {
    let script = lua
        .inspect_stack(1, |d| d.source().short_src.map(|s| s.into_owned()))
        .flatten()
        .unwrap_or_else(|| "?".to_string());
    let mut line = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        line.push_str(&v.to_string()?);
        if line.len() > MAX_PRINT_LEN {
            let mut cut = MAX_PRINT_LEN;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str("...");
            break;
        }
    }
    tracing::info!(target: "walua::script", script = %script, "{line}");
    Ok(())
}

/// `true` for names like `util` or `a.b_c.d1`.
fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// A compiled `lib/` module and the file it was compiled from, as last seen.
struct CompiledModule {
    stamp: FileStamp,
    /// `function(_ENV, ...)` around the module's source (see [`load_module`]).
    body: Function,
}

/// What tells a module file's versions apart without reading it: an editor's atomic save makes
/// a new inode, an in-place save a new modification and change time (and usually length).
#[derive(PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How long after its last change a file's stamp is trusted: two saves within one tick of the
/// file system's clock can leave the same stamp (git's "racily clean" rule).
const STAMP_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file had settled (no change for [`STAMP_SETTLE`]) at `now`.
    fn settled_at(&self, now: std::time::SystemTime) -> bool {
        let nanos = |(s, ns): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(ns);
        let changed = nanos(self.mtime).max(nanos(self.ctime));
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - changed > STAMP_SETTLE.as_nanos() as i128
    }
}

/// `lib_dir/<name with dots as slashes>.lua` as `function(_ENV, ...) <source> end`, which
/// `require` calls with the run's environment and the module name. The wrapper is compiled
/// once per file version and kept (in `modules`): a button script that requires a module
/// would otherwise read and compile it on every click. Its environment is a parameter, not an
/// upvalue, so runs (and a module re-entered while it loads) never share one. The prefix
/// stays on the source's first line, so line numbers in errors are the file's.
/// `Err` is the message `require` raises in the caller.
fn load_module(
    lua: &Lua,
    lib_dir: &Path,
    lib_display: &str,
    modules: &RefCell<HashMap<PathBuf, CompiledModule>>,
    name: &Value,
) -> Result<Function, String> {
    let name = match name {
        Value::String(s) => s.to_string_lossy(),
        _ => return Err("require: module name must be a string".to_string()),
    };
    let not_found = || {
        let shown: String = name.chars().take(64).collect();
        format!("require: module '{shown}' not found in {lib_display}/")
    };
    if !valid_module_name(&name) {
        return Err(not_found());
    }
    let rel = format!("{}.lua", name.replace('.', "/"));
    let path = lib_dir.join(&rel);
    let cannot_read = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_found()
        } else {
            format!("require: cannot read module '{name}': {e}")
        }
    };
    let stamp = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => FileStamp::of(&meta),
        Ok(_) => {
            modules.borrow_mut().remove(&path);
            return Err(not_found());
        }
        Err(e) => {
            modules.borrow_mut().remove(&path);
            return Err(cannot_read(e));
        }
    };
    if let Some(m) = modules.borrow().get(&path).filter(|m| m.stamp == stamp) {
        return Ok(m.body.clone());
    }
    // Not cached, changed, or changed too recently to trust the stamp: compile (without
    // holding the cache, so nothing here can re-enter it).
    modules.borrow_mut().remove(&path);
    let source = std::fs::read_to_string(&path).map_err(cannot_read)?;
    let body: Function = lua
        .load(format!("return function(_ENV, ...) {source}\nend"))
        .set_name(format!("@{lib_display}/{rel}"))
        .set_mode(ChunkMode::Text)
        .set_environment(lua.create_table().map_err(|e| describe(&e))?)
        .call(())
        .map_err(|e| describe(&e))?;
    if stamp.settled_at(std::time::SystemTime::now()) {
        modules.borrow_mut().insert(
            path,
            CompiledModule {
                stamp,
                body: body.clone(),
            },
        );
    }
    Ok(body)
}

fn is_memory_error(e: &Error) -> bool {
    match e {
        Error::MemoryError(_) => true,
        Error::RuntimeError(m) => {
            let first = m.lines().next().unwrap_or("");
            first == "not enough memory" || first.ends_with(": not enough memory")
        }
        Error::CallbackError { cause, .. } | Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// Human message of a Lua error: `file:line: message`, without the stack traceback. The
/// location is the innermost frame of a script (never walua's own chunks, such as the
/// sandbox's `pcall`), taken from the traceback when Lua gave none (an error object that is
/// not a string, a yield outside a coroutine, an error raised inside a C function).
pub fn describe(e: &Error) -> String {
    let message = match e {
        Error::RuntimeError(m) => strip_traceback(m).to_string(),
        Error::SyntaxError { message, .. } => return strip_traceback(message).to_string(),
        Error::CallbackError { cause, .. } => describe(cause),
        Error::WithContext { context, cause } => return format!("{context}: {}", describe(cause)),
        other => strip_traceback(&other.to_string()).to_string(),
    };
    let frame = traceback_of(e).and_then(first_script_frame);
    match split_location(&message) {
        Some((file, rest)) if is_internal_chunk(file) => match frame {
            Some(f) => format!("{f}: {rest}"),
            None => message,
        },
        Some(_) => message,
        None => {
            let message = error_object(&message);
            match frame {
                Some(f) => format!("{f}: {message}"),
                None => message,
            }
        }
    }
}

/// `file:line` at the start of a message made by [`describe`], when it is a script's.
fn script_location(message: &str) -> Option<String> {
    let (file, rest) = split_location(message)?;
    if is_internal_chunk(file) {
        return None;
    }
    Some(message[..message.len() - rest.len() - 2].to_string())
}

/// Splits `file:12: rest` into `file` and `rest`.
fn split_location(message: &str) -> Option<(&str, &str)> {
    let first = message.lines().next().unwrap_or("");
    for (i, _) in first.match_indices(':') {
        let after = &first[i + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(": ") && i > 0 {
            return Some((&message[..i], &message[i + 1 + digits + 2..]));
        }
    }
    None
}

/// walua's own chunks (the sandbox prelude, the env builders), which an error location must
/// never name: the operator can do nothing with `sandbox-prelude:34`.
fn is_internal_chunk(short_src: &str) -> bool {
    short_src == "sandbox-prelude"
        || short_src == "sandbox-env"
        || short_src.starts_with("walua:")
        || short_src == "[C]"
}

/// What Lua's `tostring` gave for an error object that is not a string, said plainly.
fn error_object(message: &str) -> String {
    for kind in ["table", "function", "thread", "userdata"] {
        if let Some(addr) = message.strip_prefix(kind).and_then(|r| r.strip_prefix(": 0x"))
            && addr.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return format!("error object is a {kind} value");
        }
    }
    match message {
        "nil" => "error object is a nil value".to_string(),
        "true" | "false" => "error object is a boolean value".to_string(),
        _ => message.to_string(),
    }
}

/// The `stack traceback:` part of a Lua error, where mlua put one.
fn traceback_of(e: &Error) -> Option<&str> {
    match e {
        Error::RuntimeError(m) => m.find("\nstack traceback:").map(|i| &m[i..]),
        Error::CallbackError { traceback, cause } => traceback_of(cause).or(Some(traceback.as_str())),
        Error::WithContext { cause, .. } => traceback_of(cause),
        _ => None,
    }
}

fn strip_traceback(m: &str) -> &str {
    match m.find("\nstack traceback:") {
        Some(i) => &m[..i],
        None => m,
    }
}

/// `file:line` of the innermost script frame of a `luaL_traceback` string.
fn first_script_frame(traceback: &str) -> Option<String> {
    traceback
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("stack traceback"))
        .find_map(|l| {
            let (loc, _) = l.split_once(": in ")?;
            let (file, line) = loc.rsplit_once(':')?;
            line.parse::<u32>().ok()?;
            (!is_internal_chunk(file)).then(|| loc.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("util.lua"),
            "local M = {}\nfunction M.double(x) return x * 2 end\nreturn M\n",
        )
        .unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/mod.lua"), "return { name = 'sub.mod' }\n").unwrap();
        std::fs::write(p.join("count.lua"), "loads = (loads or 0) + 1\nreturn {}\n").unwrap();
        std::fs::write(p.join("envcheck.lua"), "return function() return message end\n").unwrap();
        std::fs::write(p.join("bad.lua"), "local x = 1\nerror('bad module')\n").unwrap();
        dir
    }

    fn sandbox() -> (Sandbox, tempfile::TempDir) {
        let dir = lib_dir();
        let sb = Sandbox::new(Limits::default(), dir.path().to_path_buf()).unwrap();
        (sb, dir)
    }

    fn run_src<R: FromLuaMulti>(sb: &Sandbox, src: &str) -> Result<R, RunError> {
        let f = sb
            .compile("scripts/test.lua", src)
            .map_err(|e| RunError::Lua { message: e.to_string() })?;
        let env = sb.fresh_env().unwrap();
        sb.run(&f, &env, ())
    }

    #[derive(Debug, Clone, Copy)]
    enum Expect {
        ErrOrNil,
        Cpu,
        Memory,
    }

    #[test]
    fn escape_attempts_fail() {
        use Expect::*;
        let (sb, _dir) = sandbox();
        // (attempt, expectation, check run afterwards in a fresh env that must return true)
        let cases: &[(&str, Expect, Option<&str>)] = &[
            ("return io.open('/etc/passwd')", ErrOrNil, None),
            ("return io", ErrOrNil, None),
            ("return os.execute('id')", ErrOrNil, None),
            ("return os.exit(1)", ErrOrNil, None),
            ("return os.getenv('HOME')", ErrOrNil, None),
            ("return os.remove('/tmp/x')", ErrOrNil, None),
            ("return os.rename('a', 'b')", ErrOrNil, None),
            ("return os.tmpname()", ErrOrNil, None),
            ("return debug.getinfo(1)", ErrOrNil, None),
            ("return string.dump(function() end)", ErrOrNil, None),
            ("return ('').dump(function() end)", ErrOrNil, None),
            ("return dofile('/etc/passwd')", ErrOrNil, None),
            ("return loadfile('/etc/passwd')", ErrOrNil, None),
            ("return load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n')", ErrOrNil, None),
            ("return assert(load('\\27Lua'))()", ErrOrNil, None),
            (
                "return load(function() local s = '\\27Lua'; return s end, 'x', 'b')",
                ErrOrNil,
                None,
            ),
            ("return require('os')", ErrOrNil, None),
            ("return require('io')", ErrOrNil, None),
            ("return require('../../etc/passwd')", ErrOrNil, None),
            ("return require('/etc/passwd')", ErrOrNil, None),
            ("return require('util..x')", ErrOrNil, None),
            ("return require(42)", ErrOrNil, None),
            ("return package.loadlib('x', 'y')", ErrOrNil, None),
            ("return package", ErrOrNil, None),
            ("return load('return io')()", ErrOrNil, None),
            ("return load('return os.getenv', 'c', 't', _G)()", ErrOrNil, None),
            ("return rawget(_G, 'debug')", ErrOrNil, None),
            ("return getmetatable('')", ErrOrNil, None),
            ("return warn", ErrOrNil, None),
            (
                "getmetatable('').__index.upper = nil",
                ErrOrNil,
                Some("return ('a'):upper() == 'A'"),
            ),
            (
                "string.upper = nil; string.rep = nil",
                ErrOrNil,
                Some("return string.upper('a') == 'A' and ('b'):rep(2) == 'bb'"),
            ),
            (
                "rawset(string, 'x', 1); rawset(table, 'insert', nil)",
                ErrOrNil,
                Some("return string.x == nil and table.insert ~= nil"),
            ),
            (
                "collectgarbage('stop'); collectgarbage('generational')",
                ErrOrNil,
                Some("return collectgarbage('isrunning') == true"),
            ),
            (
                "setmetatable(_G, { __index = function() return 1 end })",
                ErrOrNil,
                Some("return undefined_global == nil and getmetatable(_G) == nil"),
            ),
            (
                "print = nil; pcall = nil; _G.tostring = nil",
                ErrOrNil,
                Some("return print ~= nil and pcall ~= nil and tostring ~= nil"),
            ),
            (
                "setmetatable(math, { __index = function() return 0 end }); math.pi = 3",
                ErrOrNil,
                Some("return not getmetatable(math) and math.pi > 3.14 and math.nope == nil"),
            ),
            (
                // Library tables read through to a shared copy that no run may reach.
                "getmetatable(math).__index.pi = 3",
                ErrOrNil,
                Some("return math.pi > 3.14"),
            ),
            (
                "for k in pairs(string) do rawset(string, k, nil) end; string.format = nil",
                ErrOrNil,
                Some("return string.format('%d', 7) == '7' and rawget(string, 'format') == nil"),
            ),
            (
                "return setmetatable({}, { __gc = function() while true do end end })",
                ErrOrNil,
                None,
            ),
            ("coroutine.wrap(function() while true do end end)()", Cpu, None),
            (
                "return coroutine.resume(coroutine.create(function() while true do end end))",
                Cpu,
                None,
            ),
            ("while true do pcall(function() while true do end end) end", Cpu, None),
            (
                "while true do xpcall(function() while true do end end, function(e) return e end) end",
                Cpu,
                None,
            ),
            ("while true do load(function() while true do end end) end", Cpu, None),
            (
                "local co = coroutine.wrap(function() while true do coroutine.yield() end end)\n\
                 while true do pcall(co) end",
                Cpu,
                None,
            ),
            ("return string.rep('x', 1e9)", Memory, None),
        ];
        assert!(cases.len() >= 18);
        for (src, expect, after) in cases {
            let res = run_src::<Value>(&sb, src);
            match (expect, &res) {
                (ErrOrNil, Err(RunError::Lua { .. })) | (ErrOrNil, Ok(Value::Nil)) => {}
                (Cpu, Err(RunError::Cpu { .. })) | (Memory, Err(RunError::Memory { .. })) => {}
                _ => panic!("escape attempt {src:?}: expected {expect:?}, got {res:?}"),
            }
            if let Some(check) = after {
                let ok: bool = run_src(&sb, check).unwrap_or_else(|e| panic!("check after {src:?} failed: {e}"));
                assert!(ok, "{src:?} leaked into the next run");
            }
            // The sandbox stays usable after every attempt.
            let n: i64 = run_src(&sb, "return #string.rep('ab', 3)").unwrap();
            assert_eq!(n, 6, "after {src:?}");
        }
    }

    /// Scripts an attacker (or an unlucky operator) writes to hold a Lua worker: each must end
    /// with a CPU budget error naming the script's line, and leave the sandbox usable. The
    /// elapsed times are printed (`-- --nocapture`), not asserted: the bound is measured by
    /// the `sandbox_overrun` bench; here a case that never returns fails after 30 s.
    #[test]
    fn nothing_a_script_does_outlives_its_cpu_budget() {
        let cases: &[(&str, &str)] = &[
            ("loop", "while true do end"),
            (
                "<close> handler that loops, in a looping function",
                "local function f()\n  local g <close> = setmetatable({}, { __close = function() while true do end end })\n  while true do end\nend\nf()",
            ),
            (
                "<close> handler that loops, at top level",
                "local g <close> = setmetatable({}, { __close = function() while true do end end })\nwhile true do end",
            ),
            (
                "<close> handlers that pcall loops",
                "local a <close> = setmetatable({}, { __close = function() while true do pcall(function() while true do end end) end end })\n\
                 local b <close> = setmetatable({}, { __close = function() while true do end end })\nwhile true do end",
            ),
            (
                "<close> in a coroutine closed after the interruption",
                "local co = coroutine.create(function()\n  local g <close> = setmetatable({}, { __close = function() while true do end end })\n  while true do end\nend)\n\
                 print(coroutine.resume(co))\nprint(coroutine.close(co))\nwhile true do end",
            ),
            (
                "<close> in a wrapped coroutine",
                "local f = coroutine.wrap(function()\n  local g <close> = setmetatable({}, { __close = function() while true do end end })\n  while true do end\nend)\n\
                 while true do pcall(f) end",
            ),
            (
                "backtracking pattern (14 s unbounded)",
                "return string.rep('a', 1500):find('.-.-b')",
            ),
            (
                "backtracking pattern (never returns unbounded)",
                "return string.rep('a', 3e5):find('.-.-.-.-.-.-b')",
            ),
            (
                "gmatch backtracking",
                "for w in string.rep('a', 3e4):gmatch('.-.-.-b') do end",
            ),
            (
                "gsub backtracking",
                "return (string.rep('a', 3e4):gsub('.-.-.-b', 'x'))",
            ),
            (
                "plain find, quadratic",
                "local s = string.rep('a', 4e6)\nreturn s:find(string.rep('a', 2e6) .. 'b', 1, true)",
            ),
            ("string.rep of an empty string", "return string.rep('', 1 << 62)"),
            (
                "string.rep with an empty separator",
                "return string.rep('', 1 << 62, '')",
            ),
            (
                "table.move over 2^62 slots",
                "table.move({}, 1, math.maxinteger - 1, 2)",
            ),
            (
                "table.insert with a huge __len",
                "table.insert(setmetatable({}, { __len = function() return 1 << 60 end }), 1, 'x')",
            ),
            (
                "table.remove with a huge __len",
                "table.remove(setmetatable({}, { __len = function() return 1 << 60 end }), 1)",
            ),
            (
                "table.concat through a C __index",
                "return table.concat(setmetatable({}, { __index = tostring }), '', 1, 1 << 60)",
            ),
            (
                "table.sort with a looping comparator",
                "table.sort({3, 2, 1}, function(a, b) while true do end end)",
            ),
            (
                "a full collection per call",
                "local t = {}\nfor i = 1, 2e5 do t[i] = { i } end\nwhile true do collectgarbage('collect') end",
            ),
            (
                "xpcall whose handler loops",
                "while true do xpcall(error, function() while true do end end) end",
            ),
            (
                "__tostring that loops",
                "return tostring(setmetatable({}, { __tostring = function() while true do end end }))",
            ),
            (
                "string.format of a looping __tostring",
                "return string.format('%s', setmetatable({}, { __tostring = function() while true do end end }))",
            ),
            (
                "load with a looping reader",
                "return load(function() while true do end end)",
            ),
            (
                "__index chain of functions",
                "local t = setmetatable({}, { __index = function(t, k) while true do end end })\nreturn t.x",
            ),
            (
                "error objects swallowed in a loop",
                "while true do pcall(error, {}) end",
            ),
            (
                "coroutines in a loop",
                "while true do coroutine.wrap(function() end)() end",
            ),
        ];
        let dir = lib_dir();
        let limits = Limits {
            cpu: Duration::from_millis(100),
            ..Limits::default()
        };
        let sb = Sandbox::new(limits, dir.path().to_path_buf()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sources: Vec<(String, String)> = cases.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
        std::thread::spawn(move || {
            for (name, src) in sources {
                let start = Instant::now();
                let res = run_src::<Value>(&sb, &src).map(|_| ());
                let took = start.elapsed();
                let after: Result<i64, _> = run_src(&sb, "return #string.rep('ab', 3)");
                tx.send((name, res, took, after)).unwrap();
            }
        });
        for (name, _) in cases {
            let (got, res, took, after) = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{name}: still running after 30 s"));
            assert_eq!(&got, name);
            println!("{name}: stopped after {took:?}");
            let err = res.expect_err(name);
            assert!(matches!(err, RunError::Cpu { .. }), "{name}: {err:?}");
            assert!(
                err.to_string().starts_with("scripts/test.lua:"),
                "{name}: the error names the script's line: {err}"
            );
            assert_eq!(
                after.unwrap_or_else(|e| panic!("{name}: the next run failed: {e}")),
                6,
                "{name}"
            );
        }
    }

    #[test]
    fn every_error_names_the_scripts_file_and_line() {
        let (sb, _dir) = sandbox();
        let cases: &[(&str, &str)] = &[
            (
                "local x = 1\nerror({})",
                "scripts/test.lua:2: error object is a table value",
            ),
            (
                "local x = 1\nerror()",
                "scripts/test.lua:2: error object is a nil value",
            ),
            (
                "local x = 1\nerror(false)",
                "scripts/test.lua:2: error object is a boolean value",
            ),
            (
                "local x = 1\nerror(print)",
                "scripts/test.lua:2: error object is a function value",
            ),
            (
                "local x = 1\nerror(setmetatable({}, { __tostring = function() return 'custom' end }))",
                "scripts/test.lua:2: custom",
            ),
            (
                "local x = 1\ncoroutine.yield(1)",
                "scripts/test.lua:2: attempt to yield from outside a coroutine",
            ),
            ("local x = 1\nerror('plain', 0)", "scripts/test.lua:2: plain"),
            ("local x = 1\npcall(nil)\nerror('after')", "scripts/test.lua:3: after"),
            (
                "local x = 1\nstring.rep()",
                "scripts/test.lua:2: bad argument #1 to 'rep'",
            ),
        ];
        for (src, want) in cases {
            let err = run_src::<()>(&sb, src).unwrap_err();
            assert!(err.to_string().starts_with(want), "{src:?}: {err}");
        }
        // A budget error raised while a sandbox wrapper (pcall) runs names the script's line.
        let err = run_src::<()>(&sb, "local x = 1\nwhile true do\n  pcall(string.rep, 'x', 10)\nend").unwrap_err();
        assert!(matches!(err, RunError::Cpu { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("scripts/test.lua:"), "{msg}");
        assert!(!msg.contains("sandbox-prelude"), "{msg}");
    }

    #[test]
    fn pairs_never_hands_out_a_shared_table() {
        let (sb, _dir) = sandbox();
        let attacks = [
            "local _, s = pairs(string); if type(s) == 'table' then rawset(s, 'upper', function() return 'pwned' end) end",
            "local f, s = pairs(string); pcall(function() s.upper = function() return 'pwned' end end)",
            "for k, v in pairs(string) do if type(v) == 'table' then v.upper = nil end end",
            "local _, s = next, nil; for k in pairs(table) do end; local it, st = pairs(math); pcall(rawset, st, 'pi', 3)",
        ];
        for a in attacks {
            let _ = run_src::<Value>(&sb, a);
            let ok: bool = run_src(&sb, "return string.upper('a') == 'A' and math.pi > 3.14").unwrap();
            assert!(ok, "{a} poisoned the next run");
        }
        // pairs still lists the library.
        let n: i64 = run_src(&sb, "local n = 0 for k in pairs(string) do n = n + 1 end return n").unwrap();
        assert!(n > 10, "{n}");
    }

    #[test]
    fn infinite_loop_is_stopped_then_sandbox_works() {
        let (sb, _dir) = sandbox();
        let start = Instant::now();
        let err = run_src::<()>(&sb, "local x = 0\nwhile true do x = x + 1 end").unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(&err, RunError::Cpu { budget, .. } if *budget == Duration::from_millis(200)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("CPU budget of 200 ms exceeded"), "{msg}");
        assert!(msg.starts_with("scripts/test.lua:2:"), "{msg}");
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");

        let v: i64 = run_src(&sb, "return 1 + 1").unwrap();
        assert_eq!(v, 2);
    }

    #[test]
    fn memory_bomb_is_stopped_then_sandbox_works() {
        // A generous CPU budget: on a loaded machine the bomb must hit the memory budget first.
        let dir = lib_dir();
        let limits = Limits {
            cpu: Duration::from_secs(30),
            ..Limits::default()
        };
        let sb = Sandbox::new(limits, dir.path().to_path_buf()).unwrap();
        let base = sb.lua().used_memory();
        for _ in 0..3 {
            let err = run_src::<()>(&sb, "local t = {} while true do t[#t+1] = string.rep('x', 1e6) end").unwrap_err();
            assert_eq!(
                err,
                RunError::Memory {
                    budget: 32 * 1024 * 1024
                }
            );
            assert_eq!(err.to_string(), "memory budget of 32 MiB exceeded");
            // Globals are also released.
            let err = run_src::<()>(&sb, "T = {} while true do T[#T+1] = {1, 2, 3, 4} end").unwrap_err();
            assert!(matches!(err, RunError::Memory { .. }), "{err:?}");
            assert!(sb.lua().used_memory() < base + 1024 * 1024);
            let s: String = run_src(&sb, "return string.rep('y', 1000)").unwrap();
            assert_eq!(s.len(), 1000);
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let (sb, dir) = sandbox();
        let f = sb
            .compile("scripts/buttons/x.lua", "local a = 1\n\nerror('boom')\n")
            .unwrap();
        let env = sb.fresh_env().unwrap();
        let err = sb.run::<()>(&f, &env, ()).unwrap_err();
        assert_eq!(
            err,
            RunError::Lua {
                message: "scripts/buttons/x.lua:3: boom".into()
            }
        );

        let f = sb.compile("scripts/buttons/y.lua", "local t\nreturn t.x").unwrap();
        let err = sb.run::<()>(&f, &sb.fresh_env().unwrap(), ()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("scripts/buttons/y.lua:2: attempt to index a nil value"),
            "{err}"
        );

        let err = sb.compile("scripts/buttons/z.lua", "local x = \nend").unwrap_err();
        assert!(err.to_string().contains("scripts/buttons/z.lua:2:"), "{err}");

        // Errors raised by Rust callbacks get the location of the calling Lua line.
        let env = sb.fresh_env().unwrap();
        env.set(
            "fail",
            sb.lua()
                .create_function(|_, ()| Err::<(), _>(Error::runtime("nope")))
                .unwrap(),
        )
        .unwrap();
        let f = sb.compile("scripts/cb.lua", "local a\nfail()").unwrap();
        let err = sb.run::<()>(&f, &env, ()).unwrap_err();
        assert_eq!(err.to_string(), "scripts/cb.lua:2: nope");

        // Errors inside modules name the module file.
        let err = run_src::<()>(&sb, "require('bad')").unwrap_err();
        let lib = dir.path().display();
        assert_eq!(err.to_string(), format!("{lib}/bad.lua:2: bad module"));
    }

    #[test]
    fn globals_do_not_leak_between_runs() {
        let (sb, _dir) = sandbox();
        let f = sb
            .compile("scripts/g.lua", "local before = x\nx = 42\n_G.y = 1\nreturn before")
            .unwrap();
        for _ in 0..3 {
            let env = sb.fresh_env().unwrap();
            let before: Option<i64> = sb.run(&f, &env, ()).unwrap();
            assert_eq!(before, None);
            assert_eq!(env.get::<i64>("x").unwrap(), 42);
        }
        let v: Option<i64> = run_src(&sb, "return x or y").unwrap();
        assert_eq!(v, None);
    }

    #[test]
    fn returned_closures_keep_their_run_env() {
        let (sb, _dir) = sandbox();
        let f = sb
            .compile(
                "scripts/buttons/b.lua",
                "n = 0\nreturn { run = function(k) n = n + k; return n, message end }",
            )
            .unwrap();
        let env1 = sb.fresh_env().unwrap();
        env1.set("message", "one").unwrap();
        let t1: Table = sb.run(&f, &env1, ()).unwrap();
        let env2 = sb.fresh_env().unwrap();
        env2.set("message", "two").unwrap();
        let t2: Table = sb.run(&f, &env2, ()).unwrap();

        let run1: Function = t1.get("run").unwrap();
        let run2: Function = t2.get("run").unwrap();
        assert_eq!(sb.call::<(i64, String)>(&run1, 5).unwrap(), (5, "one".into()));
        assert_eq!(sb.call::<(i64, String)>(&run1, 1).unwrap(), (6, "one".into()));
        assert_eq!(sb.call::<(i64, String)>(&run2, 2).unwrap(), (2, "two".into()));

        let looping = sb
            .compile("scripts/l.lua", "return { run = function() while true do end end }")
            .unwrap();
        let t: Table = sb.run(&looping, &sb.fresh_env().unwrap(), ()).unwrap();
        let err = sb.call::<()>(&t.get("run").unwrap(), ()).unwrap_err();
        assert!(matches!(err, RunError::Cpu { .. }), "{err:?}");
    }

    #[test]
    fn load_uses_the_run_env_and_text_only() {
        let (sb, _dir) = sandbox();
        let v: i64 = run_src(&sb, "x = 5\nreturn load('return x')()").unwrap();
        assert_eq!(v, 5);
        let v: i64 = run_src(&sb, "x = 5\nreturn load('return x', 'c', 'bt', { x = 7 })()").unwrap();
        assert_eq!(v, 7);
        let (f, msg): (Option<Function>, String) = run_src(&sb, "return load('\\27Lua')").unwrap();
        assert!(f.is_none());
        assert_eq!(msg, "load: binary chunks are not allowed");
        // A reader function delivering a binary chunk is refused by Lua itself (mode "t").
        let (f, msg): (Option<Function>, String) = run_src(
            &sb,
            "local parts, i = { '\\27Lua', 'T' }, 0\n\
             return load(function() i = i + 1; return parts[i] end, 'r', 'b')",
        )
        .unwrap();
        assert!(f.is_none());
        assert!(msg.contains("binary chunk"), "{msg}");
    }

    #[test]
    fn require_from_lib_dir_only() {
        let (sb, dir) = sandbox();
        let lib = dir.path().display().to_string();
        let v: (i64, bool, String) = run_src(
            &sb,
            "local u = require('util')\n\
             return u.double(21), u == require('util'), require('sub.mod').name",
        )
        .unwrap();
        assert_eq!(v, (42, true, "sub.mod".into()));

        // Cached per run, re-run in every run, in the caller's env.
        for _ in 0..2 {
            let n: i64 = run_src(&sb, "require('count'); require('count'); return loads").unwrap();
            assert_eq!(n, 1);
        }
        let f = sb.compile("scripts/r.lua", "return require('envcheck')()").unwrap();
        let env = sb.fresh_env().unwrap();
        env.set("message", "hello").unwrap();
        let m: String = sb.run(&f, &env, ()).unwrap();
        assert_eq!(m, "hello");

        for name in ["os", "../../etc/passwd", "/etc/passwd", "util.lua", "nope", "sub/mod"] {
            let err = run_src::<Value>(&sb, &format!("local m = require({name:?})\nreturn m")).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("scripts/test.lua:1: require: module '{name}' not found in {lib}/")
            );
        }
    }

    #[test]
    fn a_cached_module_keeps_each_runs_env_and_an_edit_is_seen_at_the_next_require() {
        let (sb, dir) = sandbox();
        // Modules are kept compiled once their file has settled (see `STAMP_SETTLE_SECS`).
        std::thread::sleep(STAMP_SETTLE + std::time::Duration::from_millis(100));
        let f = sb.compile("scripts/r.lua", "return require('envcheck')").unwrap();
        let run_with = |message: &str| -> Function {
            let env = sb.fresh_env().unwrap();
            env.set("message", message).unwrap();
            sb.run(&f, &env, ()).unwrap()
        };
        let first = run_with("one");
        let second = run_with("two");
        assert_eq!(second.call::<String>(()).unwrap(), "two");
        assert_eq!(
            first.call::<String>(()).unwrap(),
            "one",
            "reusing the compiled module must not rebind an earlier run's closures"
        );

        // Saved in place (same inode), then atomically (new inode, same length).
        std::fs::write(
            dir.path().join("util.lua"),
            "return { v = 'in place, longer' }
",
        )
        .unwrap();
        let v: String = run_src(&sb, "return require('util').v").unwrap();
        assert_eq!(v, "in place, longer");
        let tmp = dir.path().join("util.lua.tmp");
        std::fs::write(&tmp, "return { v = 'atomic, same len' }\n").unwrap();
        std::fs::rename(&tmp, dir.path().join("util.lua")).unwrap();
        let v: String = run_src(&sb, "return require('util').v").unwrap();
        assert_eq!(v, "atomic, same len");

        std::fs::remove_file(dir.path().join("util.lua")).unwrap();
        let err = run_src::<Value>(&sb, "return require('util')").unwrap_err();
        assert!(err.to_string().contains("module 'util' not found"), "{err}");
    }

    #[test]
    fn print_goes_to_tracing() {
        let (sb, _dir) = sandbox();
        let v: Option<i64> = run_src(
            &sb,
            "print('hello', 1, nil, {}, setmetatable({}, { __tostring = function() return 'T' end}))",
        )
        .unwrap();
        assert_eq!(v, None);
    }

    #[test]
    fn sandbox_is_send() {
        let (sb, _dir) = sandbox();
        let v = std::thread::spawn(move || run_src::<i64>(&sb, "return 6 * 7").unwrap())
            .join()
            .unwrap();
        assert_eq!(v, 42);
    }

    /// Per-run cost: `cargo test --lib script::sandbox::tests::bench_per_run -- --nocapture`
    #[test]
    fn bench_per_run() {
        let (sb, _dir) = sandbox();
        let src = "local s = 0\nfor i = 1, 10 do s = s + i end\nreturn s + #message";
        let f = sb.compile("scripts/bench.lua", src).unwrap();
        let n = 5_000u32;
        let time = |label: &str, mut body: Box<dyn FnMut() + '_>| {
            for _ in 0..200 {
                body();
            }
            let start = Instant::now();
            for _ in 0..n {
                body();
            }
            let per = start.elapsed() / n;
            println!("{label}: {per:?} per run");
        };
        time(
            "fresh_env only",
            Box::new(|| {
                sb.fresh_env().unwrap();
            }),
        );
        time(
            "fresh_env + run (compiled once)",
            Box::new(|| {
                let env = sb.fresh_env().unwrap();
                env.set("message", "hi").unwrap();
                assert_eq!(sb.run::<i64>(&f, &env, ()).unwrap(), 57);
            }),
        );
        // Overhead of the CPU hook on a hot loop, against a plain state without hook.
        let hot = "local s = 0 for i = 1, 3e6 do s = s + i end return s";
        let f_hot = sb.compile("scripts/hot.lua", hot).unwrap();
        let start = Instant::now();
        sb.run::<f64>(&f_hot, &sb.fresh_env().unwrap(), ()).unwrap();
        let hooked = start.elapsed();
        let plain = Lua::new();
        let g = plain.load(hot).into_function().unwrap();
        let start = Instant::now();
        g.call::<f64>(()).unwrap();
        println!(
            "3e6-iteration loop: {hooked:?} with hook, {:?} without",
            start.elapsed()
        );
        time(
            "fresh_env + compile + run",
            Box::new(|| {
                let f = sb.compile("scripts/bench.lua", src).unwrap();
                let env = sb.fresh_env().unwrap();
                env.set("message", "hi").unwrap();
                assert_eq!(sb.run::<i64>(&f, &env, ()).unwrap(), 57);
            }),
        );
    }
}
