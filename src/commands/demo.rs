//! `cognifs demo DIR` (cargo feature `demo`): devstack in-process, the demo user signed in
//! through the loopback login with a scripted browser, a welcome file, and a mount — the
//! whole product without an AWS account.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use super::mount::check_mountpoint;
use crate::auth::identity::Session;
use crate::auth::login::{Browser, LoginOptions, login};
use crate::auth::tokens::TokenStore;
use crate::config;
use crate::daemon::{Extras, init_logging, runtime, serve};
use crate::demo::{DEMO_PROFILE, profile_for, scripted_sign_in};
use crate::fs::MountOptions;

const WELCOME: &str = "Welcome to cognifs.\nThis file is an S3 object in your own prefix, served by a local devstack.\n";

pub fn demo(dir: &Path) -> anyhow::Result<()> {
    // Unlike `cognifs mount` (where a missing DIR is more likely a typo), the demo is the first
    // thing a newcomer runs: it makes the directory it was asked to mount on.
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the mount point {}", dir.display()))?;
        println!("cognifs demo: created {}", dir.display());
    }
    let dir = check_mountpoint(dir)?;
    init_logging(None, true)?;
    let rt = runtime()?;
    println!("cognifs demo: starting devstack (a local Cognito + S3 stand-in)");
    let data_dir = config::state_dir().join("demo");
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let running = rt.block_on(devstack::start(devstack::Options {
        data_dir: Some(data_dir.join("s3")),
        callback_port: free_port,
        ..devstack::Options::default()
    }))?;
    let profile = profile_for(&running, &data_dir.join("config.toml"), DEMO_PROFILE)?;
    let store = TokenStore::new(&data_dir, "tokens");
    let (user, password) = devstack::DEMO_USER;
    println!("cognifs demo: signing the demo user {user:?} in through the hosted sign-in page");
    let browser = Browser::Custom(Box::new(move |url| {
        tokio::spawn(async move {
            match scripted_sign_in(&url, user, password).await {
                Ok((200, _)) => {}
                Ok((status, body)) => eprintln!("demo sign-in failed ({status}): {body}"),
                Err(e) => eprintln!("demo sign-in failed: {e}"),
            }
        });
    }));
    rt.block_on(login(
        &profile,
        &store,
        LoginOptions {
            browser,
            timeout: Duration::from_secs(30),
        },
    ))?;
    let session = Session::with_store(profile, store);
    let objects = data_dir.join("s3");
    let shown = dir.clone();
    let ready = Box::new(move |s3_url: &str| {
        println!(
            "\ncognifs demo: {s3_url} is mounted at {}\n",
            shown.display()
        );
        println!(
            "  try:   ls -la {0}    cat {0}/welcome.txt    cp -r ~/Documents {0}/    mkdir {0}/notes",
            shown.display()
        );
        println!(
            "  data:  devstack keeps objects under {}",
            objects.display()
        );
        println!("  stop:  Ctrl-C (unmounts and stops devstack)\n");
    });
    let extras = Extras {
        // Put with the user's own credentials, through the store like every other write.
        seed: vec![(
            "welcome.txt".to_owned(),
            Bytes::from_static(WELCOME.as_bytes()),
        )],
        ready: Some(ready),
        ..Extras::default()
    };
    let result = serve(&rt, session, &dir, MountOptions::default(), extras);
    rt.block_on(running.shutdown());
    result
}
