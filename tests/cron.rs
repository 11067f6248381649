//! Cron jobs through the real daemon: they run on schedule, catch up once after downtime,
//! and follow a saved schedule without a restart.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const CUSTOMER: &str = "221770000300";

fn job(schedule: &str, text: &str) -> String {
    format!(
        "return {{ schedule = \"{schedule}\", timezone = \"Africa/Dakar\", run = function()\n  local n = (env.store.get('runs') or 0) + 1\n  env.store.set('runs', n)\n  env.whatsapp.send_template(\"{CUSTOMER}\", \"rappel\", \"fr\", {{ {{ type = \"body\", parameters = {{ {{ type = \"text\", text = \"{text} \" .. n }} }} }} }})\nend }}\n"
    )
}

async fn reminders(d: &TestDaemon) -> Vec<String> {
    d.outbound_of(CUSTOMER)
        .await
        .iter()
        .map(|m| {
            m["raw"]["template"]["components"][0]["parameters"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_job_runs_on_its_schedule_and_a_saved_schedule_takes_effect_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    put_script(dir.path(), "cron/reminder.lua", &job("* * * * * *", "tick"));
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    let runs = d
        .eventually("two runs", || async {
            let r = reminders(&d).await;
            (r.len() >= 2).then_some(r)
        })
        .await;
    assert_eq!(runs[0], "tick 1");
    assert_eq!(runs[1], "tick 2");

    // Saved with a yearly schedule: it stops firing every second.
    d.write_script("cron/reminder.lua", &job("0 0 0 1 1 *", "yearly"));
    d.eventually("new schedule loaded", || async {
        let (_, s) = d.api("/api/scripts").await;
        (s["scripts"][0]["version"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = reminders(&d).await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        reminders(&d).await.len(),
        settled,
        "the old every-second schedule still fires"
    );
}

#[tokio::test]
async fn missed_runs_after_downtime_run_once_not_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    // Every minute at second 0: after 30 minutes down, 30 ticks were missed.
    put_script(dir.path(), "cron/reminder.lua", &job("0 * * * * *", "rattrapage"));
    let text = config_text(dir.path(), DRY_RUN, "");
    let d = TestDaemon::start_in(dir, text).await;
    // Let the scheduler see the job once, then stop.
    d.eventually("job scheduled", || async {
        let (_, s) = d.api("/api/scripts").await;
        (!s["scripts"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (dir, text) = d.stop().await;
    {
        let store = walua::store::Store::open(&dir.path().join("walua.redb")).unwrap();
        let mut state = store
            .state_get("cron:reminder")
            .unwrap()
            .expect("the job was scheduled");
        state["last_tick_ms"] = json!(chrono::Utc::now().timestamp_millis() - 30 * 60 * 1000);
        state["last_local"] = json!("");
        store
            .commit_script_runs(&walua::store::ScriptCommit {
                state: vec![("cron:reminder".into(), state)],
                ..Default::default()
            })
            .unwrap();
    }
    let d = TestDaemon::start_in(dir, text).await;
    d.eventually("the catch-up run", || async {
        (!reminders(&d).await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let runs = reminders(&d).await;
    assert_eq!(runs[0], "rattrapage 1");
    // A second run only if a new minute started meanwhile; never one per missed minute.
    assert!(runs.len() <= 2, "{runs:?}");
}
