//! Budgets that hold whatever a script does: the run clock of each Lua state and the
//! timekeeper thread that interrupts runs over budget.
//!
//! # Why this design
//!
//! An instruction-count hook alone cannot bound a run: it never fires inside one C function
//! (a backtracking pattern, `string.rep("", 2^62)`, `table.move` over 2^62 slots), and an
//! error returned from an mlua hook unwinds by popping the running function's registers inside
//! the hook, which runs its `<close>` handlers with hooks disabled. So walua's Lua (the
//! vendored `lua-src`, see `vendor/lua-src/WALUA-PATCHES.md`) has an *interrupt flag* per
//! state. Once it is set:
//! - the VM raises `CPU budget exceeded` at the next count hook, after hooks are allowed again
//!   and without popping anything (the mlua hook itself never returns an error);
//! - it raises again at the return of every C function (those finished through a
//!   continuation included, as a `pcall` in a coroutine that caught the error), and inside
//!   the library's long loops (pattern matching, plain `find`, `string.rep`,
//!   `table.insert/remove/move/concat/sort`);
//! - no script code runs any more: `__close` methods and `xpcall` message handlers are
//!   skipped while the error unwinds;
//! - `pcall` and friends can catch the error, but the next instruction batch or C call raises
//!   it again, so nothing a script does keeps running; only the message handler's own return
//!   is spared (so that mlua's traceback handler can finish), not every call of the function
//!   that happens to be the handler.
//!
//! The flag is set by the state's own count hook when it sees the deadline pass, and by the
//! [`Timekeeper`] thread, which looks at every active run every [`TICK`] and so also catches a
//! run stuck in one C call. Time a run spends waiting inside `env.*` (an Odoo call, an upload)
//! is not charged to the CPU budget, but every run also has a wall-clock cap
//! (`scripts.run_timeout`), and the waits themselves are cut at that cap.
//!
//! When interruption fails anyway (a bug in a C path, a Rust callback that does not return),
//! the run is *wedged*: the timekeeper calls the clock's wedge handler once, which the worker
//! pool uses to quarantine the message and replace the worker (see `runtime`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

unsafe extern "C-unwind" {
    /// Sets or clears the interrupt flag of the Lua state `l` (any thread of it). Patched
    /// into the vendored Lua; safe to call from another thread while the state runs.
    fn lua_walua_setinterrupt(l: *mut mlua::ffi::lua_State, on: std::os::raw::c_int);
    /// `file:line` of the run's first interruption ("" if none); the owner thread only.
    fn lua_walua_where(l: *mut mlua::ffi::lua_State) -> *const std::os::raw::c_char;
    /// Clears the flag and the location; the owner thread only.
    fn lua_walua_reset(l: *mut mlua::ffi::lua_State);
}

/// How often the timekeeper looks at the active runs while there are any.
pub const TICK: Duration = Duration::from_millis(10);

/// How long an interrupted run may take to unwind before it counts as wedged.
pub const WEDGE_AFTER: Duration = Duration::from_millis(1500);

/// Why a run was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Its Lua and C execution time passed the CPU budget.
    Cpu,
    /// Its wall-clock time, waits included, passed `scripts.run_timeout`.
    WallClock,
}

/// Called once, from the timekeeper thread, when an interrupted run has not ended
/// [`WEDGE_AFTER`] after its interruption.
pub type WedgeHandler = Arc<dyn Fn(Interrupt, Duration) + Send + Sync>;

/// The clock of one Lua state: the active run's budgets and the state's interrupt flag.
pub struct RunClock {
    state: Mutex<Clock>,
    on_wedge: Mutex<Option<WedgeHandler>>,
    /// Called when a run starts waiting inside `env.*` (the pool may add a worker).
    on_wait: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

struct Clock {
    /// The main `lua_State` of the sandbox (the flag is per global state); 0 once the
    /// sandbox is gone.
    lua: usize,
    run: Option<ActiveRun>,
}

struct ActiveRun {
    started: Instant,
    /// When the CPU budget runs out, moved forward by the time spent waiting in `env.*`.
    cpu_deadline: Instant,
    /// `scripts.run_timeout` from the start, waits included.
    wall_deadline: Instant,
    /// Set while the run waits inside an `env.*` call.
    waiting_since: Option<Instant>,
    /// Set once the run is interrupted.
    interrupted: Option<(Interrupt, Instant)>,
    /// The wedge handler was called for this run.
    wedged: bool,
}

/// What [`RunClock::end`] reports about the run that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Why it was interrupted, if it was.
    pub interrupted: Option<Interrupt>,
    /// `file:line` of the script code running when it was first interrupted.
    pub location: Option<String>,
}

// SAFETY: the raw state pointer is only used to set the interrupt flag, which the patched
// Lua reads as a `volatile sig_atomic_t`, and only while `Clock::lua` is non-null (the
// sandbox nulls it under the same lock before the state is closed).
unsafe impl Send for Clock {}

impl RunClock {
    /// A clock for the Lua state `lua` (its main thread), registered with the timekeeper.
    ///
    /// # Safety
    /// `lua` must stay valid until [`RunClock::detach`] is called.
    pub unsafe fn new(lua: *mut mlua::ffi::lua_State) -> Arc<RunClock> {
        let clock = Arc::new(RunClock {
            state: Mutex::new(Clock {
                lua: lua as usize,
                run: None,
            }),
            on_wedge: Mutex::new(None),
            on_wait: Mutex::new(None),
        });
        Timekeeper::get().register(&clock);
        clock
    }

    /// Forgets the Lua state (called before it is closed).
    pub fn detach(&self) {
        let mut c = self.lock();
        c.lua = 0;
        c.run = None;
    }

    /// Sets what is called when a run of this clock wedges.
    pub fn set_wedge_handler(&self, handler: WedgeHandler) {
        *self.on_wedge.lock().expect("not poisoned") = Some(handler);
    }

    /// Sets what is called when a run of this clock starts waiting inside `env.*`.
    pub fn set_wait_handler(&self, handler: Arc<dyn Fn() + Send + Sync>) {
        *self.on_wait.lock().expect("not poisoned") = Some(handler);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a run with these budgets. Returns `false` (and changes nothing) when a run is
    /// already active: a nested call from a Rust callback runs under the outer run's budgets.
    pub fn begin(&self, cpu_budget: Duration, run_timeout: Duration) -> bool {
        let now = Instant::now();
        let mut c = self.lock();
        if c.run.is_some() {
            return false;
        }
        c.run = Some(ActiveRun {
            started: now,
            cpu_deadline: now + cpu_budget,
            wall_deadline: now + run_timeout.max(cpu_budget),
            waiting_since: None,
            interrupted: None,
            wedged: false,
        });
        c.reset();
        drop(c);
        Timekeeper::get().wake();
        true
    }

    /// Ends the active run and clears the interrupt flag. Called on the thread that ran it.
    pub fn end(&self) -> RunReport {
        let mut c = self.lock();
        let run = c.run.take();
        let location = c.location();
        c.reset();
        match run {
            Some(r) => RunReport {
                interrupted: r.interrupted.map(|(why, _)| why),
                location,
            },
            None => RunReport {
                interrupted: None,
                location: None,
            },
        }
    }

    /// Whether the active run was interrupted, and why.
    pub fn interrupted(&self) -> Option<Interrupt> {
        self.lock().run.as_ref().and_then(|r| r.interrupted.map(|(why, _)| why))
    }

    /// Whether the active run waits inside an `env.*` call.
    pub fn is_waiting(&self) -> bool {
        self.lock().run.as_ref().is_some_and(|r| r.waiting_since.is_some())
    }

    /// Time left before the active run's wall-clock cap (`None` when no run is active).
    pub fn remaining(&self) -> Option<Duration> {
        self.lock()
            .run
            .as_ref()
            .map(|r| r.wall_deadline.saturating_duration_since(Instant::now()))
    }

    /// Runs `f` — a wait inside an `env.*` call — without charging it to the CPU budget.
    /// The wall-clock cap still runs; `f` should give up when [`RunClock::remaining`] is
    /// over (see `api::block_on`).
    pub fn waiting<R>(&self, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let outer = {
            let mut c = self.lock();
            match c.run.as_mut() {
                Some(r) if r.waiting_since.is_none() => {
                    r.waiting_since = Some(start);
                    true
                }
                _ => false,
            }
        };
        if outer {
            let handler = self.on_wait.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(h) = handler {
                h();
            }
        }
        let result = f();
        if outer {
            let mut c = self.lock();
            if let Some(r) = c.run.as_mut() {
                r.waiting_since = None;
                r.cpu_deadline += start.elapsed();
            }
        }
        result
    }

    /// Interrupts the active run when one of its budgets is over. Called by the state's count
    /// hook and by the timekeeper. Returns whether the run is (now) interrupted.
    pub fn check(&self, now: Instant) -> bool {
        let mut c = self.lock();
        let Some(r) = c.run.as_mut() else {
            return false;
        };
        if r.interrupted.is_some() {
            return true;
        }
        let why = if now >= r.wall_deadline {
            Some(Interrupt::WallClock)
        } else if r.waiting_since.is_none() && now >= r.cpu_deadline {
            Some(Interrupt::Cpu)
        } else {
            None
        };
        match why {
            Some(why) => {
                r.interrupted = Some((why, now));
                c.set_flag(true);
                true
            }
            None => false,
        }
    }

    /// Interrupts the active run now: a wait inside `env.*` was cut at the wall-clock cap, and
    /// the run must not go on past it.
    pub fn interrupt(&self, why: Interrupt) {
        let mut c = self.lock();
        if let Some(r) = c.run.as_mut()
            && r.interrupted.is_none()
        {
            r.interrupted = Some((why, Instant::now()));
            c.set_flag(true);
        }
    }

    /// The timekeeper's look at this clock: interrupt when due, and report a wedge once.
    fn tick(&self, now: Instant) -> Option<(Interrupt, Duration)> {
        self.check(now);
        let mut c = self.lock();
        let r = c.run.as_mut()?;
        let (why, at) = r.interrupted?;
        if r.wedged || now.saturating_duration_since(at) < WEDGE_AFTER {
            // Keep the flag up: a run that cleared nothing keeps being interrupted.
            if !r.wedged {
                c.set_flag(true);
            }
            return None;
        }
        r.wedged = true;
        let took = now.saturating_duration_since(r.started);
        c.set_flag(true);
        Some((why, took))
    }

    fn active(&self) -> bool {
        self.lock().run.is_some()
    }
}

impl Clock {
    /// Clears the flag and the first interruption's location (owner thread).
    fn reset(&self) {
        if self.lua != 0 {
            // SAFETY: see `unsafe impl Send for Clock`; called by the state's own thread.
            unsafe { lua_walua_reset(self.lua as *mut mlua::ffi::lua_State) }
        }
    }

    /// Where the run was first interrupted (owner thread).
    fn location(&self) -> Option<String> {
        if self.lua == 0 {
            return None;
        }
        // SAFETY: a NUL-terminated buffer inside the global state, written by this thread.
        let s = unsafe { std::ffi::CStr::from_ptr(lua_walua_where(self.lua as *mut mlua::ffi::lua_State)) };
        let s = s.to_string_lossy();
        (!s.is_empty()).then(|| s.into_owned())
    }

    fn set_flag(&self, on: bool) {
        if self.lua != 0 {
            // SAFETY: see `unsafe impl Send for Clock`.
            unsafe { lua_walua_setinterrupt(self.lua as *mut mlua::ffi::lua_State, on.into()) }
        }
    }
}

/// The thread that interrupts runs over budget and reports wedged ones. One per process.
pub struct Timekeeper {
    clocks: Mutex<Vec<Weak<RunClock>>>,
    wake: Condvar,
    /// The timekeeper waits for a run to start (rather than ticking).
    idle: AtomicBool,
}

impl Timekeeper {
    /// The process's timekeeper, started on first use.
    pub fn get() -> &'static Timekeeper {
        static KEEPER: OnceLock<&'static Timekeeper> = OnceLock::new();
        KEEPER.get_or_init(|| {
            let keeper: &'static Timekeeper = Box::leak(Box::new(Timekeeper {
                clocks: Mutex::new(Vec::new()),
                wake: Condvar::new(),
                idle: AtomicBool::new(false),
            }));
            std::thread::Builder::new()
                .name("walua-timekeeper".into())
                .spawn(move || keeper.run())
                .expect("the timekeeper thread starts");
            keeper
        })
    }

    fn register(&self, clock: &Arc<RunClock>) {
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        clocks.retain(|w| w.strong_count() > 0);
        clocks.push(Arc::downgrade(clock));
    }

    /// Wakes the timekeeper if it sleeps without watching (no run was active).
    fn wake(&self) {
        if self.idle.load(Ordering::SeqCst) {
            let _clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            let live: Vec<Arc<RunClock>> = {
                let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
                clocks.iter().filter_map(Weak::upgrade).collect()
            };
            let now = Instant::now();
            for clock in &live {
                if let Some((why, took)) = clock.tick(now) {
                    let handler = clock.on_wedge.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    tracing::error!(
                        ?why,
                        took_ms = took.as_millis() as u64,
                        "a Lua run did not stop when interrupted"
                    );
                    if let Some(h) = handler {
                        h(why, took);
                    }
                }
            }
            let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
            // Set before looking, so that a run starting now either is seen or wakes us.
            self.idle.store(true, Ordering::SeqCst);
            if live.iter().any(|c| c.active()) {
                self.idle.store(false, Ordering::SeqCst);
                drop(live);
                drop(self.wake.wait_timeout(clocks, TICK));
            } else {
                drop(live);
                drop(self.wake.wait_timeout(clocks, Duration::from_secs(1)));
                self.idle.store(false, Ordering::SeqCst);
            }
        }
    }
}
