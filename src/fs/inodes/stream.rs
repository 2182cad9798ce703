//! A directory's listing as its LIST pages arrive, so that `readdir` answers the first
//! entries of a large directory before the last page is read.
//!
//! Entries come in S3's key order, a directory where its key `name/` sorts ([`key_order`]):
//! the order the pages bring them in, so each page's entries can go out at once. Only one
//! rule needs a look ahead: a directory hides an object of the same name (the mapping rules,
//! [`super::build_listing`]), and the directory `a` (key `a/`) comes after the object `a`,
//! possibly on a later page. So an object `N` waits until the greatest key seen is at least
//! `N/`; only the last names of a page can wait (those that `N/` would still follow), and
//! every later key sorts after them, so the order holds. The result is exactly
//! [`super::build_listing`] of all the pages, in key order, in pieces.

use std::collections::BTreeMap;

use super::entries::{Found, Kind, valid_name};
use crate::store::ListPage;

/// The order `readdir` hands entries out in: S3's key order, a directory as `name/`.
pub fn key_order(a: (&str, bool), b: (&str, bool)) -> std::cmp::Ordering {
    fn key(name: &str, dir: bool) -> impl Iterator<Item = u8> + '_ {
        name.bytes().chain(dir.then_some(b'/'))
    }
    key(a.0, a.1).cmp(key(b.0, b.1))
}

#[derive(Default)]
pub struct ListingStream {
    /// A name cognifs keeps for itself in this directory, not shown (the root's index
    /// directory: `index.rs`).
    hide: Option<&'static str>,
    /// Entries seen and not handed out yet, by key (a directory's ends in `/`).
    pending: BTreeMap<String, (String, Found)>,
    /// The greatest key seen, relative to the directory (a directory as `name/`).
    horizon: String,
}

/// Whether the key `prefix/` sorts after `h`.
fn dir_key_after(prefix: &[u8], h: &[u8]) -> bool {
    let n = prefix.len().min(h.len());
    match prefix[..n].cmp(&h[..n]) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        // (`h` no longer than `prefix`: `h` is a prefix of `prefix/`, so it sorts first.)
        std::cmp::Ordering::Equal => h.get(n).is_none_or(|&c| b'/' > c),
    }
}

impl ListingStream {
    /// A listing that does not show `hide`.
    pub fn hiding(hide: Option<&'static str>) -> Self {
        ListingStream {
            hide,
            ..Default::default()
        }
    }

    /// Takes one page in; returns the entries no later page can change, in key order.
    pub fn push(&mut self, page: &ListPage) -> Vec<(String, Found)> {
        for d in &page.dirs {
            let key = format!("{d}/");
            if key > self.horizon {
                self.horizon.clone_from(&key);
            }
            if valid_name(d) && self.hide != Some(d.as_str()) {
                // The directory hides the object of its name, listed before it.
                self.pending.remove(d.as_str());
                self.pending.insert(key, (d.clone(), Found::dir()));
            }
        }
        for f in &page.files {
            if f.name > self.horizon {
                self.horizon.clone_from(&f.name);
            }
            let hidden = self.pending.contains_key(&format!("{}/", f.name));
            if valid_name(&f.name) && !hidden && self.hide != Some(f.name.as_str()) {
                self.pending
                    .insert(f.name.clone(), (f.name.clone(), Found::object(f)));
            }
        }
        let mut ready = Vec::new();
        while let Some((_, (name, found))) = self.pending.first_key_value() {
            if found.kind != Kind::Dir && dir_key_after(name.as_bytes(), self.horizon.as_bytes()) {
                break;
            }
            ready.push(self.pending.pop_first().expect("just seen").1);
        }
        ready
    }

    /// Everything left: the listing is complete.
    pub fn finish(self) -> Vec<(String, Found)> {
        self.pending.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectInfo;
    use std::time::SystemTime;

    fn obj(name: &str) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size: 1,
            etag: format!("\"{name}\""),
            last_modified: SystemTime::UNIX_EPOCH,
            meta: None,
        }
    }

    /// `keys` (relative, with `/` below the directory) as S3 lists them with delimiter `/`,
    /// in pages of `per_page` keys or prefixes.
    fn pages(keys: &[&str], per_page: usize) -> Vec<ListPage> {
        let mut items: Vec<(String, bool)> = Vec::new();
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for k in sorted {
            match k.find('/') {
                Some(i) => {
                    let p = format!("{}/", &k[..i]);
                    if items.last().is_none_or(|(last, _)| *last != p) {
                        items.push((p, true));
                    }
                }
                None => items.push((k.to_owned(), false)),
            }
        }
        items
            .chunks(per_page.max(1))
            .map(|chunk| ListPage {
                files: chunk
                    .iter()
                    .filter(|(_, d)| !d)
                    .map(|(k, _)| obj(k))
                    .collect(),
                dirs: chunk
                    .iter()
                    .filter(|(_, d)| *d)
                    .map(|(k, _)| k.trim_end_matches('/').to_owned())
                    .collect(),
                next: Some("more".into()),
            })
            .collect()
    }

    fn streamed(pages: &[ListPage]) -> (Vec<(String, Kind)>, Vec<usize>) {
        let mut s = ListingStream::default();
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        for p in pages {
            let got = s.push(p);
            sizes.push(got.len());
            out.extend(got);
        }
        out.extend(s.finish());
        (out.into_iter().map(|(n, f)| (n, f.kind)).collect(), sizes)
    }

    fn whole(pages: &[ListPage]) -> Vec<(String, Kind)> {
        let mut all: Vec<(String, Kind)> = super::super::build_listing(pages)
            .into_iter()
            .map(|(n, f)| (n, f.kind))
            .collect();
        all.sort_by(|a, b| key_order((&a.0, a.1 == Kind::Dir), (&b.0, b.1 == Kind::Dir)));
        all
    }

    #[test]
    fn a_directory_hides_as_in_the_whole_listing_whatever_the_page_breaks() {
        let keys = [
            "a", "a-b", "a.txt", "a/x", "a/y", "a0", "b", "b/", "b!", "c", "c.d/e", "c.d", "d", "",
            "x//y", "z",
        ];
        for per_page in 1..=keys.len() {
            let p = pages(&keys, per_page);
            assert_eq!(streamed(&p).0, whole(&p), "pages of {per_page}");
        }
    }

    #[test]
    fn plain_names_are_handed_out_page_by_page() {
        let names: Vec<String> = (0..2500).map(|i| format!("file-{i:05}")).collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let (all, sizes) = streamed(&pages(&keys, 1000));
        assert_eq!(all.len(), 2500);
        // All but the last name of each page (which a directory `name/` could still hide).
        assert_eq!(sizes, vec![999, 1000, 500]);
    }

    #[test]
    fn random_trees_stream_as_they_list() {
        // A small deterministic generator: names from an alphabet rich in bytes around `/`.
        let alphabet = ["a", "b", ".", "-", "0", "~", " "];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..300 {
            let mut keys = Vec::new();
            for _ in 0..next(30) {
                let mut k = String::new();
                for _ in 0..1 + next(4) {
                    k.push_str(alphabet[next(alphabet.len() as u64) as usize]);
                }
                if next(3) == 0 {
                    k.push('/');
                    k.push_str(alphabet[next(alphabet.len() as u64) as usize]);
                }
                keys.push(k);
            }
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let per_page = 1 + next(5) as usize;
            let p = pages(&refs, per_page);
            assert_eq!(streamed(&p).0, whole(&p), "{keys:?} in pages of {per_page}");
        }
    }
}
