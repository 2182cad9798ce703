//! Multipart uploads: each lives under `uploads/{id}/` (`upload.json` plus one `part-N` file per
//! part) until completed or aborted, and is reloaded from there on open, so it survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::{NewObjectAttrs, ObjectMeta, ObjectStore, StoreError, WriteCheck, new_id, now_ns};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadInfo {
    pub key: String,
    pub attrs: NewObjectAttrs,
    pub initiated_ns: u64,
}

#[derive(Debug, Clone)]
pub struct PartInfo {
    pub size: u64,
    pub etag: String,
    pub last_modified_ns: u64,
}

pub(super) struct Upload {
    info: UploadInfo,
    parts: BTreeMap<i32, PartInfo>,
}

pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

fn write_json_atomically(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

impl ObjectStore {
    pub(super) fn load_uploads(dir: &Path) -> io::Result<HashMap<String, Upload>> {
        let mut uploads = HashMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let id = entry.file_name().to_string_lossy().into_owned();
            let Ok(raw) = fs::read(entry.path().join("upload.json")) else {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            };
            let Ok(info) = serde_json::from_slice::<UploadInfo>(&raw) else {
                continue;
            };
            let mut parts = BTreeMap::new();
            for part in fs::read_dir(entry.path())? {
                let part = part?;
                let name = part.file_name().to_string_lossy().into_owned();
                let Some(n) = name
                    .strip_prefix("part-")
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                let data = fs::read(part.path())?;
                let mtime = part.metadata()?.modified()?;
                parts.insert(
                    n,
                    PartInfo {
                        size: data.len() as u64,
                        etag: hex::encode(Md5::digest(&data)),
                        last_modified_ns: mtime
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0),
                    },
                );
            }
            uploads.insert(id, Upload { info, parts });
        }
        Ok(uploads)
    }
    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.root.join("uploads").join(upload_id)
    }
    pub fn create_upload(&self, key: &str, attrs: NewObjectAttrs) -> io::Result<String> {
        let id = new_id();
        let dir = self.upload_dir(&id);
        fs::create_dir_all(&dir)?;
        let info = UploadInfo {
            key: key.to_owned(),
            attrs,
            initiated_ns: now_ns(),
        };
        write_json_atomically(&dir.join("upload.json"), &info)?;
        self.index.lock().unwrap().uploads.insert(
            id.clone(),
            Upload {
                info,
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    fn check_upload(&self, upload_id: &str, key: &str) -> Result<(), StoreError> {
        match self.index.lock().unwrap().uploads.get(upload_id) {
            Some(u) if u.info.key == key => Ok(()),
            _ => Err(StoreError::NoSuchUpload),
        }
    }

    fn record_part(
        &self,
        upload_id: &str,
        n: i32,
        size: u64,
        etag: String,
        tmp: &Path,
    ) -> Result<PartInfo, StoreError> {
        let mut index = self.index.lock().unwrap();
        let Some(upload) = index.uploads.get_mut(upload_id) else {
            let _ = fs::remove_file(tmp);
            return Err(StoreError::NoSuchUpload);
        };
        fs::rename(tmp, self.upload_dir(upload_id).join(format!("part-{n}")))?;
        let part = PartInfo {
            size,
            etag,
            last_modified_ns: now_ns(),
        };
        upload.parts.insert(n, part.clone());
        Ok(part)
    }

    pub async fn upload_part<S, E>(
        &self,
        upload_id: &str,
        key: &str,
        n: i32,
        body: S,
    ) -> Result<PartInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=10_000).contains(&n) {
            return Err(StoreError::InvalidPart(format!(
                "part number {n} is outside 1..=10000"
            )));
        }
        self.check_upload(upload_id, key)?;
        let tmp = self.root.join("tmp").join(new_id());
        let (size, etag) = Self::write_stream(&tmp, body).await?;
        self.record_part(upload_id, n, size, etag, &tmp)
    }

    /// UploadPartCopy: bytes `range` (half-open) of `src` become part `n`.
    pub async fn upload_part_copy(
        &self,
        upload_id: &str,
        key: &str,
        n: i32,
        src: &str,
        range: Option<(u64, u64)>,
    ) -> Result<PartInfo, StoreError> {
        self.check_upload(upload_id, key)?;
        let (meta, file) = self.open_object(src)?;
        let (start, end) = range.unwrap_or((0, meta.size));
        if start > end || end > meta.size {
            return Err(StoreError::InvalidPart(
                "copy source range is outside the object".into(),
            ));
        }
        let tmp = self.root.join("tmp").join(new_id());
        let tmp2 = tmp.clone();
        let (size, etag) = tokio::task::spawn_blocking(move || -> io::Result<(u64, String)> {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = file;
            file.seek(SeekFrom::Start(start))?;
            let mut reader = file.take(end - start);
            let mut out = io::BufWriter::new(File::create(&tmp2)?);
            let mut hasher = Md5::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0;
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            out.flush()?;
            Ok((size, hex::encode(hasher.finalize())))
        })
        .await
        .map_err(io::Error::other)??;
        self.record_part(upload_id, n, size, etag, &tmp)
    }

    pub fn list_parts(
        &self,
        upload_id: &str,
        key: &str,
    ) -> Result<Vec<(i32, PartInfo)>, StoreError> {
        let index = self.index.lock().unwrap();
        match index.uploads.get(upload_id) {
            Some(u) if u.info.key == key => {
                Ok(u.parts.iter().map(|(n, p)| (*n, p.clone())).collect())
            }
            _ => Err(StoreError::NoSuchUpload),
        }
    }

    /// Uploads in progress whose key starts with `prefix`, as (key, upload id, initiated).
    pub fn list_uploads(&self, prefix: &str) -> Vec<(String, String, u64)> {
        let index = self.index.lock().unwrap();
        let mut out: Vec<_> = index
            .uploads
            .iter()
            .filter(|(_, u)| u.info.key.starts_with(prefix))
            .map(|(id, u)| (u.info.key.clone(), id.clone(), u.info.initiated_ns))
            .collect();
        out.sort();
        out
    }

    pub fn abort_upload(&self, upload_id: &str, key: &str) -> Result<(), StoreError> {
        {
            let mut index = self.index.lock().unwrap();
            match index.uploads.get(upload_id) {
                Some(u) if u.info.key == key => {}
                _ => return Err(StoreError::NoSuchUpload),
            }
            index.uploads.remove(upload_id);
        }
        fs::remove_dir_all(self.upload_dir(upload_id))?;
        Ok(())
    }

    /// CompleteMultipartUpload with the client's list of (part number, etag), if `check` holds
    /// when the assembled object commits (atomically with the commit). When it does not, the
    /// upload stays, to be completed again or aborted.
    pub async fn complete_upload(
        &self,
        upload_id: &str,
        key: &str,
        wanted: &[(i32, String)],
        check: &WriteCheck<'_>,
    ) -> Result<ObjectMeta, StoreError> {
        let (info, parts) = {
            let index = self.index.lock().unwrap();
            match index.uploads.get(upload_id) {
                Some(u) if u.info.key == key => (u.info.clone(), u.parts.clone()),
                _ => return Err(StoreError::NoSuchUpload),
            }
        };
        if wanted.is_empty() {
            return Err(StoreError::InvalidPart("no parts given".into()));
        }
        let mut chosen = Vec::with_capacity(wanted.len());
        for (i, (n, etag)) in wanted.iter().enumerate() {
            if i > 0 && *n <= wanted[i - 1].0 {
                return Err(StoreError::InvalidPartOrder);
            }
            let part = parts
                .get(n)
                .ok_or_else(|| StoreError::InvalidPart(format!("part {n} was not uploaded")))?;
            if etag.trim_matches('"') != part.etag {
                return Err(StoreError::InvalidPart(format!(
                    "part {n} has another etag"
                )));
            }
            if i + 1 < wanted.len() && part.size < MIN_PART_SIZE {
                return Err(StoreError::EntityTooSmall);
            }
            chosen.push((*n, part.etag.clone()));
        }
        let blob = new_id();
        let tmp = self.root.join("tmp").join(&blob);
        let dir = self.upload_dir(upload_id);
        let numbers: Vec<i32> = chosen.iter().map(|(n, _)| *n).collect();
        let tmp2 = tmp.clone();
        let size = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut out = File::create(&tmp2)?;
            let mut size = 0;
            for n in numbers {
                let mut part = File::open(dir.join(format!("part-{n}")))?;
                size += io::copy(&mut part, &mut out)?;
            }
            Ok(size)
        })
        .await
        .map_err(io::Error::other)??;
        let mut hasher = Md5::new();
        for (_, etag) in &chosen {
            hasher.update(hex::decode(etag).map_err(|e| StoreError::InvalidPart(e.to_string()))?);
        }
        let etag = format!("{}-{}", hex::encode(hasher.finalize()), chosen.len());
        tokio::fs::rename(&tmp, self.blob_path(&blob)).await?;
        let meta = ObjectMeta {
            blob,
            size,
            etag,
            last_modified_ns: now_ns(),
            metadata: info.attrs.metadata,
            content_type: info.attrs.content_type,
        };
        self.commit(key, &meta, check)?;
        self.index.lock().unwrap().uploads.remove(upload_id);
        let _ = fs::remove_dir_all(self.upload_dir(upload_id));
        Ok(meta)
    }
}
