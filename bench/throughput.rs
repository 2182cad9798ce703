//! cognifs against a direct S3 client, on the same devstack server, in the same run.
//! Prints a table of times and ratios; ratios are what count (the README's
//! "Performance" section has figures). Run as root (FUSE): `cargo bench --bench throughput`.
//! `BENCH_SIZE_MIB` (default 512) sets the large object, `BENCH_FILES` (default 5000) the
//! directory listed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::primitives::ByteStream;
use cognifs::auth::identity::{Session, start_refresher};
use cognifs::auth::login::{Browser, LoginOptions, login};
use cognifs::auth::tokens::TokenStore;
use cognifs::fs::MountOptions;
use cognifs::store::{S3Store, s3_client};
use futures::StreamExt;

const ADMIN: (&str, &str) = ("BENCHADMIN", "bench-admin-secret");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn admin_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ADMIN.0, ADMIN.1, None, None, "bench"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Reads a file front to back in 1 MiB requests, as `cp` does.
fn read_file(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

/// `ls -l`: every entry's attributes.
fn list_long(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        entry.expect("entry").metadata().expect("stat");
        n += 1;
    }
    n
}

/// One object uploaded as `part_size` parts, `in_flight` at a time.
async fn multipart_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    data: &[u8],
    part_size: usize,
    in_flight: usize,
) {
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let parts: Vec<_> = futures::stream::iter(data.chunks(part_size).enumerate())
        .map(|(i, chunk)| {
            let n = i as i32 + 1;
            let req = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()));
            async move {
                let out = req.send().await.unwrap();
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .e_tag(out.e_tag().unwrap())
                    .build()
            }
        })
        .buffered(in_flight)
        .collect()
        .await;
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

struct Row {
    what: &'static str,
    direct: Duration,
    cognifs: Duration,
    bytes: Option<u64>,
}

fn mibps(bytes: u64, d: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let size_mib = env_usize("BENCH_SIZE_MIB", 512);
    let files = env_usize("BENCH_FILES", 5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = rt
        .block_on(devstack::start(devstack::Options {
            data_dir: Some(work.path().join("s3")),
            admin: Some((ADMIN.0.into(), ADMIN.1.into())),
            callback_port: port,
            ..Default::default()
        }))
        .expect("devstack");
    let profile = cognifs::demo::profile_for(&running, &work.path().join("config.toml"), "bench")
        .expect("the devstack profile loads");
    let tokens = TokenStore::new(work.path(), "bench");
    let (user, password) = devstack::DEMO_USER;
    let browser = Browser::Custom(Box::new(move |url| {
        tokio::spawn(async move {
            let (status, body) = cognifs::demo::scripted_sign_in(&url, user, password)
                .await
                .expect("sign-in");
            assert_eq!(status, 200, "loopback page: {body}");
        });
    }));
    rt.block_on(login(
        &profile,
        &tokens,
        LoginOptions {
            browser,
            timeout: Duration::from_secs(30),
        },
    ))
    .expect("login");
    let refresher = rt
        .block_on(start_refresher(Session::with_store(
            profile.clone(),
            tokens,
        )))
        .expect("credentials");
    let prefix = profile.prefix_for(&refresher.identity_id);
    let admin = admin_client(&running.base_url);
    let bucket = profile.bucket.clone();

    eprintln!("seeding {size_mib} MiB object and {files} small objects...");
    let big: Vec<u8> = (0..size_mib << 20)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();
    let big_key = format!("{prefix}big.bin");
    rt.block_on(async {
        // Multipart, so the seed itself does not buffer a second copy per request.
        multipart_put(&admin, &bucket, &big_key, &big, 16 << 20, 1).await;
        futures::stream::iter(0..files)
            .map(|i| {
                let admin = admin.clone();
                let key = format!("{prefix}many/file-{i:05}.txt");
                let bucket = bucket.clone();
                async move {
                    admin
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(ByteStream::from(vec![b'x'; 100]))
                        .send()
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
    drop(big);

    let user_s3 = s3_client(&profile, refresher.credentials.clone());
    let mut rows = Vec::new();

    // Direct: one streaming GET of the whole object; one paged LIST of the directory.
    let t = Instant::now();
    let direct_bytes = rt.block_on(async {
        let mut body = user_s3
            .get_object()
            .bucket(&bucket)
            .key(&big_key)
            .send()
            .await
            .unwrap()
            .body;
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            n += chunk.unwrap().len() as u64;
        }
        n
    });
    let direct_read = t.elapsed();
    let t = Instant::now();
    let listed = rt.block_on(async {
        let mut count = 0;
        let mut pages = user_s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(format!("{prefix}many/"))
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            count += page.unwrap().contents().len();
        }
        count
    });
    let direct_list = t.elapsed();
    assert_eq!(listed, files);

    let mountpoint: PathBuf = work.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let opts = MountOptions {
        cache_bytes: ((size_mib as u64) << 20) + (64 << 20),
        ..MountOptions::default()
    };
    let store = std::sync::Arc::new(S3Store::new(
        user_s3.clone(),
        bucket.clone(),
        prefix.clone(),
    ));
    let mount = cognifs::fs::mount(store, opts, &mountpoint, rt.handle().clone()).expect("mount");

    let t = Instant::now();
    let n = read_file(&mountpoint.join("big.bin"));
    let cold = t.elapsed();
    assert_eq!(n, direct_bytes);
    rows.push(Row {
        what: "cold sequential read",
        direct: direct_read,
        cognifs: cold,
        bytes: Some(n),
    });
    let t = Instant::now();
    read_file(&mountpoint.join("big.bin"));
    let warm = t.elapsed();
    rows.push(Row {
        what: "warm re-read (vs direct GET)",
        direct: direct_read,
        cognifs: warm,
        bytes: Some(n),
    });
    let t = Instant::now();
    let entries = list_long(&mountpoint.join("many"));
    let ls = t.elapsed();
    assert_eq!(entries, files);
    rows.push(Row {
        what: "ls -l of the directory",
        direct: direct_list,
        cognifs: ls,
        bytes: None,
    });

    // Writes. Direct: one multipart upload of the same bytes (8 MiB parts, 4 in flight,
    // like cognifs's defaults) and 500 sequential PutObjects of 4 KiB.
    let local = work.path().join("local.bin");
    let data: Vec<u8> = (0..size_mib << 20)
        .map(|i| (i as u32).wrapping_mul(40503) as u8)
        .collect();
    std::fs::write(&local, &data).unwrap();
    let t = Instant::now();
    rt.block_on(multipart_put(
        &user_s3,
        &bucket,
        &format!("{prefix}direct-upload.bin"),
        &data,
        8 << 20,
        4,
    ));
    let direct_write = t.elapsed();
    let t = Instant::now();
    std::fs::copy(&local, mountpoint.join("copied.bin")).expect("cp into the mount");
    let cp = t.elapsed();
    rows.push(Row {
        what: "sequential write (cp)",
        direct: direct_write,
        cognifs: cp,
        bytes: Some(data.len() as u64),
    });
    drop(data);

    let small = vec![b's'; 4096];
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..500 {
            let key = format!("{prefix}direct-small/f{i:03}");
            user_s3
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(ByteStream::from(small.clone()))
                .send()
                .await
                .unwrap();
        }
    });
    let direct_small = t.elapsed();
    std::fs::create_dir(mountpoint.join("small")).unwrap();
    let t = Instant::now();
    for i in 0..500 {
        std::fs::write(mountpoint.join(format!("small/f{i:03}")), &small).expect("small write");
    }
    let small_writes = t.elapsed();
    rows.push(Row {
        what: "500 x 4 KiB files",
        direct: direct_small,
        cognifs: small_writes,
        bytes: None,
    });

    mount.unmount().expect("unmount");

    println!(
        "\ncognifs vs direct aws-sdk-s3 on the same devstack ({size_mib} MiB object, {files} entries)\n"
    );
    println!("| operation | direct | cognifs | cognifs speed / direct |");
    println!("|---|---|---|---|");
    for r in &rows {
        let (d, c) = match r.bytes {
            Some(b) => (
                format!("{:.2} s ({})", r.direct.as_secs_f64(), mibps(b, r.direct)),
                format!("{:.2} s ({})", r.cognifs.as_secs_f64(), mibps(b, r.cognifs)),
            ),
            None => (
                format!("{:.3} s", r.direct.as_secs_f64()),
                format!("{:.3} s", r.cognifs.as_secs_f64()),
            ),
        };
        println!(
            "| {} | {d} | {c} | {:.2} |",
            r.what,
            r.direct.as_secs_f64() / r.cognifs.as_secs_f64()
        );
    }
    println!(
        "\nwarm re-read is {:.1}x faster than the cold read",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    drop(refresher);
    rt.block_on(running.shutdown());
}
