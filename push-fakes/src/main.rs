//! `firmcast-push-fakes`: run the APNs and FCM fakes for manual tests and
//! benchmarks, write the credentials firmcast needs, print where they are.
//!
//! ```text
//! firmcast-push-fakes [--apns-port N] [--fcm-port N] [--dir DIR] [--stats-ms N]
//!                     [--fcm-max-per-second N] [--answer-delay-ms N]
//! ```
//!
//! Ports default to 0 (any free port). DIR (default `./push-fakes`) receives
//! `apns.p8`, `apns-ca.pem` and `fcm.json`. Runs until Ctrl-C.
//!
//! `--stats-ms N` (for `bench/fanout.sh`) prints what the fakes counted,
//! checked every N ms and printed when it changed (and once at start):
//! `stats t=<unix seconds> apns_requests=.. apns_delivered=.. fcm_requests=..
//! fcm_delivered=.. fcm_token_requests=..`. The bench measures each
//! provider's rate from these lines, i.e. by what the fake received.
//!
//! `--fcm-max-per-second N` gives the FCM project a send quota of N per
//! wall-clock second (beyond it: 429 `QUOTA_EXCEEDED`, `Retry-After: 1`), to
//! watch several instances pace themselves against one limit.
//! `--answer-delay-ms N` makes both providers slow: every send is answered
//! N ms late. Neither changes what is printed.
//!
//! Both fakes share one thread (a current-thread tokio runtime): the
//! benchmarks pin them to one core, where a multi-thread runtime only adds
//! cross-thread wake-ups, and its LIFO slot runs an HTTP/2 connection task
//! right after each stream task answers, so every response went out in a
//! `writev` of its own; on one thread a connection flushes all the
//! responses that are ready at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use firmcast_push_fakes::{ApnsFake, ApnsOptions, FcmFake, FcmOptions};

const USAGE: &str =
    "usage: firmcast-push-fakes [--apns-port N] [--fcm-port N] [--dir DIR] [--stats-ms N]
                           [--fcm-max-per-second N] [--answer-delay-ms N]

Runs a fake APNs (HTTP/2 + TLS) and a fake FCM v1 (+ OAuth token endpoint)
on 127.0.0.1, writes apns.p8, apns-ca.pem and fcm.json into DIR, prints the
matching firmcast config, and serves until Ctrl-C. With --stats-ms N, prints
a `stats t=... apns_delivered=... fcm_delivered=...` line whenever the counts
changed, checked every N ms. With --fcm-max-per-second N, FCM accepts at
most N sends per second and answers the rest 429 QUOTA_EXCEEDED. With
--answer-delay-ms N, both fakes answer every send N ms late.

example: firmcast-push-fakes --apns-port 8443 --fcm-port 8444 --dir /tmp/fakes";

struct Args {
    apns_port: u16,
    fcm_port: u16,
    dir: PathBuf,
    /// 0: no stats lines.
    stats_ms: u64,
    /// FCM's send quota per second; `None`: unlimited.
    fcm_max_per_second: Option<u32>,
    /// 0: answer at once.
    answer_delay_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        apns_port: 0,
        fcm_port: 0,
        dir: PathBuf::from("push-fakes"),
        stats_ms: 0,
        fcm_max_per_second: None,
        answer_delay_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--apns-port" => {
                args.apns_port = value("--apns-port")?
                    .parse()
                    .map_err(|_| "--apns-port: not a port number".to_owned())?
            }
            "--fcm-port" => {
                args.fcm_port = value("--fcm-port")?
                    .parse()
                    .map_err(|_| "--fcm-port: not a port number".to_owned())?
            }
            "--dir" => args.dir = PathBuf::from(value("--dir")?),
            "--stats-ms" => {
                args.stats_ms = value("--stats-ms")?
                    .parse()
                    .map_err(|_| "--stats-ms: not a number of milliseconds".to_owned())?
            }
            "--fcm-max-per-second" => {
                args.fcm_max_per_second = Some(
                    value("--fcm-max-per-second")?
                        .parse()
                        .map_err(|_| "--fcm-max-per-second: not a number of sends".to_owned())?,
                )
            }
            "--answer-delay-ms" => {
                args.answer_delay_ms = value("--answer-delay-ms")?
                    .parse()
                    .map_err(|_| "--answer-delay-ms: not a number of milliseconds".to_owned())?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let answer_delay = std::time::Duration::from_millis(args.answer_delay_ms);
    let apns = ApnsFake::start_with(
        SocketAddr::from(([127, 0, 0, 1], args.apns_port)),
        ApnsOptions {
            answer_delay,
            ..ApnsOptions::default()
        },
    )
    .await?;
    let fcm = FcmFake::start_with(
        SocketAddr::from(([127, 0, 0, 1], args.fcm_port)),
        FcmOptions {
            max_per_second: args.fcm_max_per_second,
            answer_delay,
            ..FcmOptions::default()
        },
    )
    .await?;
    let key = args.dir.join("apns.p8");
    let ca = args.dir.join("apns-ca.pem");
    let account = args.dir.join("fcm.json");
    apns.write_key(&key)?;
    apns.write_ca(&ca)?;
    fcm.write_service_account(&account)?;

    println!("apns_url = {}", apns.base_url());
    println!("fcm_url = {}", fcm.base_url());
    println!("fcm_token_uri = {}", fcm.token_uri());
    println!();
    println!("[push.apns]");
    println!("enabled = true");
    println!("base_url = \"{}\"", apns.base_url());
    println!("key_file = \"{}\"", key.display());
    println!("key_id = \"{}\"", apns.key_id());
    println!("team_id = \"{}\"", apns.team_id());
    println!("topic = \"{}\"", apns.topic());
    println!("ca_file = \"{}\"", ca.display());
    println!();
    println!("[push.fcm]");
    println!("enabled = true");
    println!("base_url = \"{}\"", fcm.base_url());
    println!("service_account_file = \"{}\"", account.display());

    let stats = async {
        if args.stats_ms == 0 {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(args.stats_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tick.tick().await;
            let counts = (
                apns.total_requests(),
                apns.delivery_count(),
                fcm.send_requests(),
                fcm.delivery_count(),
                fcm.token_requests(),
            );
            if last != Some(counts) {
                last = Some(counts);
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                println!(
                    "stats t={t:.6} apns_requests={} apns_delivered={} fcm_requests={} fcm_delivered={} fcm_token_requests={}",
                    counts.0, counts.1, counts.2, counts.3, counts.4
                );
            }
        }
    };
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        () = stats => {}
    }
    eprintln!(
        "stopping: APNs delivered {}, FCM delivered {}",
        apns.delivery_count(),
        fcm.delivery_count()
    );
    Ok(())
}
