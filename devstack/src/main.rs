use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// A local stand-in for Cognito (hosted UI + identity pool) and S3, for cognifs.
#[derive(Parser, Debug)]
#[command(
    name = "cognifs-devstack",
    version,
    after_help = "Signals: SIGUSR1 forgets every AWS credential issued so far, as a revocation \
                  would (S3 then answers 403 InvalidAccessKeyId; sign-ins are kept, so clients \
                  get new credentials). SIGINT or SIGTERM stops."
)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where objects are kept, and (in cognito-state.json, mode 0600) the signing key,
    /// refresh-token grants and issued AWS credentials, so tokens and credentials from before
    /// a restart keep working. Default: a fresh temporary directory, removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A user who can sign in, NAME:PASSWORD (repeatable; default demo:demo-pass).
    #[arg(long = "user", value_parser = parse_pair)]
    users: Vec<(String, String)>,
    /// S3 credentials that may do anything, ACCESS:SECRET.
    #[arg(long, value_parser = parse_pair)]
    admin: Option<(String, String)>,
    /// Registers http://localhost:PORT/callback and http://127.0.0.1:PORT/callback.
    #[arg(long, default_value_t = 53682)]
    callback_port: u16,
    /// Lifetime of ID and access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: u64,
    /// Lifetime of issued AWS credentials, in seconds.
    #[arg(long, default_value_t = 3600)]
    credentials_ttl: u64,
    /// Lifetime of a sign-in (its refresh token), in seconds (Cognito's default: 30 days).
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    refresh_token_ttl: u64,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "cognifs")]
    bucket: String,
    /// Write a cognifs config whose [default] profile points here, once the listener is up.
    #[arg(long)]
    config_out: Option<PathBuf>,
    /// Added latency for every S3 request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction (0..1) of S3 requests answered 503 SlowDown.
    #[arg(long, default_value_t = 0.0)]
    s3_error_rate: f64,
    /// Ignore the conditions of writes, copies and deletes (If-Match, If-None-Match: *,
    /// x-amz-copy-source-if-match): accept them and write anyway, as some S3-compatible
    /// servers do.
    #[arg(long)]
    ignore_conditions: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err("expected NAME:SECRET".into()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .ok();
    // s3s logs whole requests (signatures, session tokens) at debug: never let those through.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("s3s=warn".parse()?);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let args = Args::parse();
    // Before the banner: a script that signals as soon as it sees it must not kill us.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let users = args.users.clone();
    let running = devstack::start(devstack::Options {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        users: args.users,
        admin: args.admin,
        callback_port: args.callback_port,
        token_ttl: Duration::from_secs(args.token_ttl),
        credentials_ttl: Duration::from_secs(args.credentials_ttl),
        refresh_token_ttl: Duration::from_secs(args.refresh_token_ttl),
        region: args.region,
        bucket: args.bucket,
        latency: Duration::from_millis(args.latency_ms),
        s3_error_rate: args.s3_error_rate,
        max_copy_size: 5 << 30,
        ignore_conditions: args.ignore_conditions,
    })
    .await?;
    if let Some(path) = &args.config_out {
        running.write_config(path)?;
    }
    let p = &running.profile;
    println!("devstack listening on {}", running.base_url);
    println!("  hosted UI      {}/oauth2/authorize", running.base_url);
    println!(
        "  user pool      {}  app client {}",
        p.user_pool_id, p.client_id
    );
    println!("  identity pool  {}", p.identity_pool_id);
    println!(
        "  bucket         s3://{} (path-style at {})",
        p.bucket, p.s3_endpoint
    );
    println!("  data dir       {}", running.data_dir.display());
    if args.ignore_conditions {
        println!("  conditions     ignored (writes, copies and deletes write anyway)");
    }
    let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "  users          {}",
        if names.is_empty() {
            devstack::DEMO_USER.0.to_owned()
        } else {
            names.join(", ")
        }
    );
    if let Some(path) = &args.config_out {
        println!("  config         {}", path.display());
    }

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => {
                let forgotten = running.forget_credentials();
                tracing::info!("forgot {forgotten} issued AWS credentials; sign-ins kept");
            }
        }
    }
    running.shutdown().await;
    Ok(())
}
