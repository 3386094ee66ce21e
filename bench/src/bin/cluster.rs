//! `cargo run --release -p bench --bin cluster`: cluster mode on PostgreSQL, measured.
//! Build the node binary first: `cargo build --release -p partykit-tests --bin cluster-node`.
//! `cluster --help` lists the options; the "Cluster" section of `docs/PERFORMANCE.md`
//! describes the method and holds the latest figures.
//!
//! Three node processes of `cluster-node` (the tests' node binary) run against a
//! throw-away PostgreSQL (fsync on) started for the run, and three scenarios follow:
//!
//! 1. **Durable puts**: one client per room, rooms spread over the nodes (room `i` is
//!    first reached through node `i % 3`, which takes its lease), each sending `inc` (one
//!    `storage.put` each, output gate on) as fast as its socket takes them; a client is
//!    done when it hears the count it expects, which the gate lets out only once every
//!    put is durable. Next to it, the same PostgreSQL committing one upsert per
//!    transaction from as many connections as the runtime's pool.
//! 2. **Forwarding**: a room owned by node 0; a sender and one receiver on node 0, one
//!    receiver through node 1 (relayed to node 0). Messages at a fixed rate; each
//!    receiver's latency (send → receive, one clock) and the nodes' CPU per delivery.
//! 3. **Failover**: a room owned by one node; SIGKILL it; time until a POST to the room
//!    through another node succeeds; the node is restarted between trials.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::measure;
use futures_util::{SinkExt, StreamExt};
use partykit_tests::cluster::TestCluster;
use partykit_tests::postgres::TestPostgres;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;

const USAGE: &str = "\
usage: cluster [options]
  Cluster mode on PostgreSQL: durable puts/s over 3 nodes, forwarding latency and CPU,
  failover time. Needs target/release/cluster-node:
  cargo build --release -p partykit-tests --bin cluster-node

options:
  --rooms N        rooms of the puts scenario (default 100)
  --puts N         puts per room (default 2000)
  --rate N         messages per second of the forwarding scenario (default 2000)
  --secs S         how long the forwarding scenario sends (default 5)
  --trials N       failover trials (default 10)
  --ttl-ms N       the lease TTL of the nodes (default 2000)
  -h, --help       this text";

struct Options {
    rooms: usize,
    puts: usize,
    rate: u64,
    secs: u64,
    trials: usize,
    ttl_ms: u64,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        rooms: 100,
        puts: 2000,
        rate: 2000,
        secs: 5,
        trials: 10,
        ttl_ms: 2000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{arg} {value}: not a number"))
        };
        match arg.as_str() {
            "--rooms" => options.rooms = number()? as usize,
            "--puts" => options.puts = number()? as usize,
            "--rate" => options.rate = number()?,
            "--secs" => options.secs = number()?,
            "--trials" => options.trials = number()? as usize,
            "--ttl-ms" => options.ttl_ms = number()?,
            _ => return Err(format!("unknown option {arg}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn node_exe() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|error| format!("current_exe: {error}"))?;
    let node = exe.with_file_name("cluster-node");
    if !node.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p partykit-tests --bin cluster-node",
            node.display()
        ));
    }
    Ok(node.display().to_string())
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cluster bench failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: &Options) -> Result<(), String> {
    let exe = node_exe()?;
    let database = TestPostgres::database()
        .await
        .ok_or("PostgreSQL is not available (see the message above)")?;
    let ttl = options.ttl_ms.to_string();
    let mut cluster =
        TestCluster::start_with(&exe, &database, 3, &[("PARTYKIT_LEASE_TTL_MS", &ttl)]).await;
    println!(
        "partykit-rs cluster benchmark: 3 nodes ({}), PostgreSQL {} with fsync on, lease TTL {} ms",
        exe, database.url, options.ttl_ms
    );

    let puts = durable_puts(&cluster, options).await?;
    let baseline = baseline_puts(&database.url, Duration::from_secs(3)).await?;
    println!();
    println!(
        "| scenario | puts | puts/s | baseline (one commit per put, 16 connections) puts/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {} rooms over 3 nodes | {} | {:.0} | {:.0} | {:.1} |",
        options.rooms,
        options.rooms * options.puts,
        puts,
        baseline,
        puts / baseline
    );

    let forwarding = forwarding(&cluster, options).await?;
    println!();
    println!("| receiver | deliveries | p50 µs | p99 µs | max µs |\n|---|---:|---:|---:|---:|");
    for (name, latencies) in [
        ("on the owner", &forwarding.owner),
        ("through a non-owner", &forwarding.relayed),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            latencies.len(),
            measure::percentile(latencies, 50.0) / 1000,
            measure::percentile(latencies, 99.0) / 1000,
            latencies.last().copied().unwrap_or(0) / 1000
        );
    }
    println!(
        "server CPU: owner {:.1} µs/delivery, relaying node {:.1} µs per relayed delivery ({} deliveries)",
        forwarding.owner_cpu_us, forwarding.relay_cpu_us, forwarding.deliveries
    );

    let failovers = failover(&mut cluster, options).await?;
    let mut sorted = failovers.clone();
    sorted.sort_by(f64::total_cmp);
    println!();
    println!(
        "failover (SIGKILL → first successful POST through another node), TTL {} ms, {} trials: median {:.0} ms, max {:.0} ms; each: {}",
        options.ttl_ms,
        sorted.len(),
        measure::median(&sorted),
        sorted.last().copied().unwrap_or(0.0),
        failovers
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(addr: std::net::SocketAddr, room: &str) -> Result<Socket, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect {addr}: {error}"))?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let url = format!("ws://{addr}/parties/main/{room}");
    let (socket, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .map_err(|error| format!("WebSocket {url}: {error}"))?;
    Ok(socket)
}

/// The next text frame, as a number (the counter's value).
async fn next_count(socket: &mut Socket) -> Result<u64, String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| "no count within 60 s".to_owned())?
            .ok_or("socket ended")?
            .map_err(|error| error.to_string())?;
        if let Frame::Text(text) = frame {
            return text.parse().map_err(|_| format!("not a count: {text}"));
        }
    }
}

async fn durable_puts(cluster: &TestCluster, options: &Options) -> Result<f64, String> {
    // Each room is taken by the node its client reaches first.
    let mut sockets = Vec::with_capacity(options.rooms);
    for room in 0..options.rooms {
        let mut socket =
            connect(cluster.addr(room % cluster.len()), &format!("puts-{room}")).await?;
        let start = next_count(&mut socket).await?;
        sockets.push((socket, start));
    }
    let puts = options.puts;
    let started = Instant::now();
    let clients = sockets.into_iter().map(|(socket, start)| async move {
        let (mut sink, mut stream) = socket.split();
        let send = async {
            for i in 0..puts {
                sink.feed(Frame::text("inc"))
                    .await
                    .map_err(|error| error.to_string())?;
                if i % 64 == 63 {
                    sink.flush().await.map_err(|error| error.to_string())?;
                }
            }
            sink.flush().await.map_err(|error| error.to_string())
        };
        let expect = start + puts as u64;
        let hear = async {
            loop {
                let frame = stream
                    .next()
                    .await
                    .ok_or("socket ended")?
                    .map_err(|error| error.to_string())?;
                if let Frame::Text(text) = frame
                    && text.parse::<u64>().ok() == Some(expect)
                {
                    return Ok::<_, String>(());
                }
            }
        };
        let (sent, heard) = tokio::join!(send, hear);
        sent.and(heard)
    });
    futures_util::future::try_join_all(clients).await?;
    let elapsed = started.elapsed();
    Ok((options.rooms * options.puts) as f64 / elapsed.as_secs_f64())
}

/// The same database with one upsert per transaction from 16 connections.
async fn baseline_puts(url: &str, duration: Duration) -> Result<f64, String> {
    let clients = (0..16).map(|c| async move {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let statement = client
            .prepare(
                "INSERT INTO partykit_kv (party, room, key, value) VALUES ('baseline', $1, $2, $3)
                 ON CONFLICT (party, room, key) DO UPDATE SET value = excluded.value",
            )
            .await
            .map_err(|error| error.to_string())?;
        let room = format!("b{c}");
        let value = vec![b'v'; 64];
        let until = Instant::now() + duration;
        let mut puts = 0u64;
        while Instant::now() < until {
            let key = format!("k{puts}").into_bytes();
            client
                .execute(&statement, &[&room, &key, &value])
                .await
                .map_err(|error| error.to_string())?;
            puts += 1;
        }
        Ok::<_, String>(puts)
    });
    let puts: u64 = futures_util::future::try_join_all(clients)
        .await?
        .into_iter()
        .sum();
    Ok(puts as f64 / duration.as_secs_f64())
}

struct Forwarding {
    owner: Vec<u64>,
    relayed: Vec<u64>,
    deliveries: u64,
    owner_cpu_us: f64,
    relay_cpu_us: f64,
}

async fn forwarding(cluster: &TestCluster, options: &Options) -> Result<Forwarding, String> {
    let room = "fan-out";
    let mut sender = connect(cluster.addr(0), room).await?;
    next_count(&mut sender).await?;
    let mut owner = connect(cluster.addr(0), room).await?;
    next_count(&mut owner).await?;
    let mut relayed = connect(cluster.addr(1), room).await?;
    next_count(&mut relayed).await?;
    if cluster.owner_of("main", room).await != Some(0) {
        return Err("node 0 does not own the fan-out room".into());
    }
    let clock = Instant::now();
    let total = options.rate * options.secs;
    let interval = Duration::from_secs_f64(1.0 / options.rate as f64);
    let cpu = |i: usize| measure::cpu_time(cluster.pid(i).unwrap_or(0)).unwrap_or_default();
    let (owner_before, relay_before) = (cpu(0), cpu(1));
    let receive = |mut socket: Socket| async move {
        let mut latencies = Vec::with_capacity(total as usize);
        while (latencies.len() as u64) < total {
            let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .map_err(|_| "a receiver heard nothing for 10 s".to_owned())?
                .ok_or("socket ended")?
                .map_err(|error| error.to_string())?;
            if let Frame::Text(text) = frame
                && let Some(sent) = text.strip_prefix("t:").and_then(|t| t.parse::<u64>().ok())
            {
                let now = clock.elapsed().as_nanos() as u64;
                latencies.push(now.saturating_sub(sent));
            }
        }
        Ok::<_, String>((socket, latencies))
    };
    let send = async {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..total {
            ticks.tick().await;
            let now = clock.elapsed().as_nanos() as u64;
            sender
                .send(Frame::text(format!("t:{now}")))
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok::<_, String>(())
    };
    let (sent, at_owner, through) = tokio::join!(send, receive(owner), receive(relayed));
    sent?;
    let (_owner, mut at_owner) = at_owner?;
    let (_relayed, mut through) = through?;
    let (owner_cpu, relay_cpu) = (cpu(0) - owner_before, cpu(1) - relay_before);
    at_owner.sort_unstable();
    through.sort_unstable();
    // The owner delivers to three sockets (the sender hears its own message too).
    let deliveries = total * 3;
    Ok(Forwarding {
        owner: at_owner,
        relayed: through,
        deliveries,
        owner_cpu_us: owner_cpu.as_secs_f64() * 1e6 / deliveries as f64,
        relay_cpu_us: relay_cpu.as_secs_f64() * 1e6 / total as f64,
    })
}

async fn failover(cluster: &mut TestCluster, options: &Options) -> Result<Vec<f64>, String> {
    let mut times = Vec::with_capacity(options.trials);
    for trial in 0..options.trials {
        let room = format!("failover-{trial}");
        let victim = trial % cluster.len();
        let path = format!("/parties/main/{room}");
        let status = cluster.http(victim, "POST", &path).await?.status;
        if status != 200 {
            return Err(format!("trial {trial}: the first POST answered {status}"));
        }
        let other = (victim + 1) % cluster.len();
        cluster.kill(victim).await;
        let killed = Instant::now();
        loop {
            if killed.elapsed() > Duration::from_millis(options.ttl_ms) + Duration::from_secs(30) {
                return Err(format!("trial {trial}: the room did not come back"));
            }
            if matches!(cluster.http(other, "POST", &path).await, Ok(response) if response.status == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        cluster.restart(victim).await;
    }
    Ok(times)
}
