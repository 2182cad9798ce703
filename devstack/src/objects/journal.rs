//! The index journal: `index.jsonl`, one JSON record per put or delete, appended only after the
//! blob it names is complete on disk. On open it is replayed into the in-memory index and then
//! rewritten compactly, one record per live object.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum JournalRecord {
    Put { key: String, meta: ObjectMeta },
    Del { key: String },
}

/// Replays the journal at `path` (if any) into the index it describes.
pub(super) fn replay(path: &Path) -> io::Result<BTreeMap<String, ObjectMeta>> {
    let mut objects = BTreeMap::new();
    if path.exists() {
        let reader = BufReader::new(File::open(path)?);
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            // A torn last line (crash mid-append) names a blob we never promised anyone.
            match serde_json::from_str::<JournalRecord>(&line) {
                Ok(JournalRecord::Put { key, meta }) => {
                    objects.insert(key, meta);
                }
                Ok(JournalRecord::Del { key }) => {
                    objects.remove(&key);
                }
                Err(err) => tracing::warn!(%err, "skipping unreadable journal line"),
            }
        }
    }
    Ok(objects)
}

/// Rewrites the journal at `path` compactly: one record per live object.
pub(super) fn compact(path: &Path, objects: &BTreeMap<String, ObjectMeta>) -> io::Result<()> {
    let compact_path = path.with_extension("jsonl.tmp");
    {
        let mut out = io::BufWriter::new(File::create(&compact_path)?);
        for (key, meta) in objects {
            let rec = JournalRecord::Put {
                key: key.clone(),
                meta: meta.clone(),
            };
            serde_json::to_writer(&mut out, &rec).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&compact_path, path)
}

pub(super) fn append(journal: &mut File, rec: &JournalRecord) -> io::Result<()> {
    let mut line = serde_json::to_vec(rec).map_err(io::Error::other)?;
    line.push(b'\n');
    journal.write_all(&line)
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;
    use crate::objects::tests::body;
    use crate::objects::{NewObjectAttrs, ObjectStore};

    #[tokio::test]
    async fn journal_survives_reopen_and_drops_orphans() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ObjectStore::open(dir.path()).unwrap();
            let attrs = NewObjectAttrs {
                metadata: [("mtime".to_owned(), "1.5".to_owned())].into(),
                content_type: None,
            };
            store.put("k", body(b"one"), attrs).await.unwrap();
            store
                .put("k", body(b"two"), NewObjectAttrs::default())
                .await
                .unwrap();
            store
                .put("gone", body(b"x"), NewObjectAttrs::default())
                .await
                .unwrap();
            store.delete("gone").unwrap();
        }
        fs::write(dir.path().join("blobs").join("orphan"), b"junk").unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let meta = store.head("k").unwrap();
        assert_eq!(meta.etag, hex::encode(Md5::digest(b"two")));
        assert!(meta.metadata.is_empty());
        assert!(store.head("gone").is_none());
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 1);
    }
}
