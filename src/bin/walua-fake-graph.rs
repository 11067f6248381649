//! `walua-fake-graph`: the test suite's fake Graph API (tests/support/fake_graph.rs) as a
//! program, for benchmarks: it answers message sends with Meta's success body and writes the
//! number of accepted sends as JSON lines (`{"t": seconds, "accepted": n}`) to `--stats`.
//!
//! ```sh
//! walua-fake-graph --token T --port-file /tmp/fg.port --stats /tmp/fg.stats --duration 60
//! ```

#[allow(dead_code)]
#[path = "../../tests/support/fake_graph.rs"]
mod fake_graph;
#[allow(dead_code)]
#[path = "../../tests/support/serve.rs"]
mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

/// A fake of Meta's Graph API on loopback.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The access token requests must carry.
    #[arg(long, default_value = "bench-access-token")]
    token: String,
    /// Writes `http://127.0.0.1:PORT/v21.0` (the api_base) to this file once listening.
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// Appends `{"t": seconds, "accepted": n}` lines here whenever the count changes.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let fg = fake_graph::FakeGraph::start(&args.token).await;
        fg.set_latency(Duration::from_millis(args.latency_ms));
        let url = fg.url();
        eprintln!("fake Graph API at {url}");
        if let Some(p) = &args.url_file {
            std::fs::write(p, &url)?;
        }
        let mut stats = match &args.stats {
            Some(p) => Some(std::fs::File::create(p)?),
            None => None,
        };
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(args.duration);
        let mut last = usize::MAX;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n = fg.accepted_count();
            if n != last {
                last = n;
                if let Some(f) = stats.as_mut() {
                    writeln!(f, r#"{{"t":{:.3},"accepted":{n}}}"#, start.elapsed().as_secs_f64())?;
                }
            }
        }
        Ok(())
    })
}
