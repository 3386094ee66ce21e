//! `cargo run --release -p bench`: runs the benchmark suite and prints the table.
//! `bench --help` lists the options.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::load::Timing;
use bench::scenarios::{self, Options, Pinning};
use bench::servers::{self, ServerKind};
use bench::{measure, report};

const USAGE: &str = "\
usage: bench [options]
  Runs partykit-rs's chat party and a plain-axum reference server side by side and
  prints a Markdown table (then one JSON line per scenario, each starting with '{').

options:
  --quick            1 repetition, 0.5 s warm-up, 1.5 s windows (a minute or so)
  --reps N           repetitions per server (default 3)
  --window SECONDS   measured window of each run (default 4)
  --warmup SECONDS   warm-up before each window (default 1)
  --only A,B         only these scenarios (see `bench list`)
  --no-pin           do not pin the servers and the load generator to cores
  --no-nice          do not raise the bench's priority (nice -10, when root)
  -h, --help         this text

  bench list                          the scenarios
  bench callgrind [fanout|rooms ...]  user-space instructions per delivery under
                                      valgrind --tool=callgrind, both servers (counts:
                                      stable on a busy machine; a few minutes);
                                      with PARTYKIT_METRICS_ADDR set, partykit
                                      serves its metrics there and is scraped once
  bench serve <partykit|reference>    (internal) serve one server on 127.0.0.1:0";

struct Args {
    repetitions: usize,
    window: f64,
    warmup: f64,
    only: Option<Vec<String>>,
    pin: bool,
    nice: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        repetitions: 3,
        window: 4.0,
        warmup: 1.0,
        only: None,
        pin: true,
        nice: true,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {
                parsed.repetitions = 1;
                parsed.window = 1.5;
                parsed.warmup = 0.5;
            }
            "--reps" => {
                parsed.repetitions = number(&value("--reps")?)?;
            }
            "--window" => parsed.window = number(&value("--window")?)?,
            "--warmup" => parsed.warmup = number(&value("--warmup")?)?,
            "--only" => {
                let names = value("--only")?;
                parsed.only = Some(names.split(',').map(str::to_owned).collect());
            }
            "--no-pin" => parsed.pin = false,
            "--no-nice" => parsed.nice = false,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if parsed.repetitions == 0 || parsed.window <= 0.0 || parsed.warmup < 0.0 {
        return Err("repetitions and window must be positive".to_owned());
    }
    Ok(parsed)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("serve") => {
            let kind = args.nth(1).and_then(|name| ServerKind::from_name(&name));
            match kind {
                Some(kind) => servers::serve(kind),
                None => {
                    eprintln!("usage: bench serve <partykit|reference>");
                    return ExitCode::from(2);
                }
            }
        }
        Some("callgrind") => return callgrind(args.skip(1).collect()),
        Some("list") => {
            for scenario in scenarios::default_suite() {
                println!("{:14} {}", scenario.name, scenario.title);
            }
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut suite = scenarios::default_suite();
    if let Some(only) = &args.only {
        if let Some(unknown) = only
            .iter()
            .find(|name| !suite.iter().any(|scenario| scenario.name == name.as_str()))
        {
            eprintln!("unknown scenario {unknown:?}; `bench list` shows them");
            return ExitCode::from(2);
        }
        suite.retain(|scenario| only.iter().any(|name| name == scenario.name));
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("cannot find the bench executable: {error}");
            return ExitCode::FAILURE;
        }
    };
    let autogroup_before = measure::autogroup_nice();
    let options = Options {
        exe,
        repetitions: args.repetitions,
        timing: Timing {
            warmup: Duration::from_secs_f64(args.warmup),
            window: Duration::from_secs_f64(args.window),
        },
        settle: Duration::from_secs(1),
        // First the priority (it is per thread: only threads started later inherit it),
        // then the cores (taskset sets every thread's).
        nice: if args.nice { raise_priority() } else { None },
        pinning: if args.pin { pin_load_generator() } else { None },
    };
    let machine = measure::Machine::read();
    eprint!("{}", report::heading(&machine, &options));
    let started = Instant::now();
    let results = bench::run_suite(&suite, &options, |line| eprintln!("{line}"));
    eprintln!("suite took {:.0} s\n", started.elapsed().as_secs_f64());
    if options.nice.is_some() {
        restore_priority(autogroup_before);
    }
    println!("{}", report::heading(&machine, &options));
    println!("{}", report::table(&results));
    let machine_line = serde_json::json!({ "machine": machine, "pinning": options.pinning });
    println!("{machine_line}");
    for result in &results {
        println!("{}", report::json_line(result, &options));
    }
    let failed = results.iter().any(|result| {
        ServerKind::ALL
            .into_iter()
            .any(|kind| result.runs(kind).iter().any(Result::is_err))
    });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `bench callgrind`: every shape (or those named) against both servers, then the table.
fn callgrind(names: Vec<String>) -> ExitCode {
    let mut shapes = bench::callgrind::default_shapes();
    if !names.is_empty() {
        if let Some(unknown) = names
            .iter()
            .find(|name| !shapes.iter().any(|shape| shape.name == name.as_str()))
        {
            eprintln!("unknown shape {unknown:?}: fanout or rooms");
            return ExitCode::from(2);
        }
        shapes.retain(|shape| names.iter().any(|name| name == shape.name));
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("cannot find the bench executable: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut counts = Vec::new();
    for shape in shapes {
        for kind in ServerKind::ALL {
            eprintln!("callgrind: {} against {kind}…", shape.name);
            match bench::callgrind::measure(&exe, kind, shape) {
                Ok(count) => {
                    eprintln!(
                        "  {} instructions, {} deliveries: {:.0} per delivery",
                        count.instructions,
                        shape.deliveries(),
                        count.per_delivery()
                    );
                    counts.push(count);
                }
                Err(error) => {
                    eprintln!("callgrind run failed: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("{}", bench::callgrind::table(&counts));
    ExitCode::SUCCESS
}

/// The nice value the bench and its servers run at (unless `--no-nice`).
const NICE: i32 = -10;

/// Runs the bench, and so the servers it starts, at nice -10 so that other work on the
/// machine disturbs the figures less: the process's own value, and its autogroup's
/// (restored by [`restore_priority`]). `None` (with a warning) when not allowed.
fn raise_priority() -> Option<i32> {
    if let Err(error) = measure::renice(std::process::id(), NICE) {
        eprintln!("warning: cannot raise the bench's priority ({error})");
        return None;
    }
    if measure::autogroup_nice().is_some()
        && let Err(error) = measure::set_autogroup_nice(NICE)
    {
        eprintln!("warning: cannot raise the bench's autogroup priority ({error})");
    }
    Some(NICE)
}

/// Puts the autogroup's nice value back as it was before the run.
fn restore_priority(autogroup_before: Option<i32>) {
    if let Some(nice) = autogroup_before {
        let _ = measure::set_autogroup_nice(nice);
    }
}

/// Pins this process (the load generator) to the second core it may use; the servers
/// go on the first. `None` (with a warning) when that is not possible.
fn pin_load_generator() -> Option<Pinning> {
    let cpus = measure::own_cpus();
    let [server_core, loadgen_core, ..] = cpus[..] else {
        eprintln!("warning: fewer than 2 cores available ({cpus:?}): nothing is pinned");
        return None;
    };
    match measure::pin(std::process::id(), loadgen_core) {
        Ok(()) => Some(Pinning {
            server_core,
            loadgen_core,
        }),
        Err(error) => {
            eprintln!("warning: cannot pin the load generator ({error}): nothing is pinned");
            None
        }
    }
}
