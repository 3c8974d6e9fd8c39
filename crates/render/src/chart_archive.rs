//! What kas forwards to an agent as a chart (`render_on: agent`): a gzip'd
//! tar that is the chart the config names, read once here before it is
//! sent. The agent hands it to helm, whose loader takes each entry's path
//! after its first segment; so an archive passes only if it holds
//! `<name>/Chart.yaml`, unpacks to a bounded size in a bounded number of
//! entries, and has no absolute path, no `..` and no link of any kind
//! (`helm package` writes none; a link could only point somewhere else).
//!
//! Invariant: this reads bytes in memory and writes nothing; the bounds
//! hold while reading, so a gzip bomb stops at the limit, not after it.

use std::cell::Cell;
use std::io::{self, Read};

use crate::charts::ChartName;

/// How much an archive may unpack to. The defaults are far above any
/// published chart (a chart's templates are text; the largest common
/// charts unpack to a few MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes of the unpacked tar stream: headers, files and padding.
    pub unpacked_bytes: u64,
    /// Entries of any kind, folders included.
    pub entries: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            unpacked_bytes: 32 << 20,
            entries: 10_000,
        }
    }
}

/// Why an archive is not forwarded as a chart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a gzip'd tar: {0}")]
    Unreadable(String),
    #[error("it unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("it has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("entry {path:?} is an absolute path")]
    Absolute { path: String },
    #[error("entry {path:?} climbs out of the chart with '..'")]
    Climbs { path: String },
    #[error("entry {path:?} is a link; a chart holds files and folders only")]
    Link { path: String },
    #[error("entry {path:?} is neither a file nor a folder")]
    NotAFile { path: String },
    #[error("it holds no {expected}: not the chart {name}")]
    NoChart { name: String, expected: String },
}

/// Checks that `archive` is the chart `name`, within `bounds`.
pub fn check(archive: &[u8], name: &ChartName, bounds: Bounds) -> Result<(), ArchiveError> {
    let exceeded = Cell::new(false);
    // Every gzip member, as Go's reader (helm's) reads them: a second
    // member must not hide entries from this check.
    let unpacked = Bounded {
        inner: flate2::read::MultiGzDecoder::new(archive),
        left: bounds.unpacked_bytes,
        exceeded: &exceeded,
    };
    let failed = |e: io::Error| match exceeded.get() {
        true => ArchiveError::TooLarge {
            limit: bounds.unpacked_bytes,
        },
        false => ArchiveError::Unreadable(e.to_string()),
    };
    let expected = format!("{name}/Chart.yaml");
    let mut has_chart = false;
    let mut tar = tar::Archive::new(unpacked);
    for (count, entry) in tar.entries().map_err(failed)?.enumerate() {
        if count >= bounds.entries {
            return Err(ArchiveError::TooManyEntries {
                limit: bounds.entries,
            });
        }
        let entry = entry.map_err(failed)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if path.starts_with(['/', '\\']) {
            return Err(ArchiveError::Absolute { path });
        }
        // helm splits on `\` when a name holds one (archives from Windows).
        if path.split(['/', '\\']).any(|segment| segment == "..") {
            return Err(ArchiveError::Climbs { path });
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ArchiveError::Link { path });
        }
        if !kind.is_file() && !kind.is_dir() {
            return Err(ArchiveError::NotAFile { path });
        }
        has_chart |= kind.is_file() && path == expected;
    }
    if exceeded.get() {
        return Err(ArchiveError::TooLarge {
            limit: bounds.unpacked_bytes,
        });
    }
    match has_chart {
        true => Ok(()),
        false => Err(ArchiveError::NoChart {
            name: name.to_string(),
            expected,
        }),
    }
}

/// A reader that fails once more than `left` bytes have been read, and
/// says so in `exceeded` (the tar reader wraps the error it sees).
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the bound
            // from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("unpacked size over the limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Entry, archive, chart};

    fn web() -> ChartName {
        ChartName::parse("web").expect("a name")
    }

    fn checked(bytes: &[u8]) -> Result<(), ArchiveError> {
        check(bytes, &web(), Bounds::default())
    }

    #[test]
    fn a_chart_as_helm_packages_it_passes() {
        assert_eq!(checked(&chart("web")), Ok(()));
        let with_folders = archive(&[
            Entry {
                name: b"web/",
                kind: tar::EntryType::Directory,
                data: b"",
                link: b"",
            },
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry::file("web/charts/db/Chart.yaml", b"name: db\n"),
        ]);
        assert_eq!(checked(&with_folders), Ok(()));
    }

    #[test]
    fn an_archive_without_the_named_charts_chart_yaml_is_refused() {
        let no_chart_yaml = archive(&[Entry::file("web/values.yaml", b"a: 1\n")]);
        assert!(matches!(
            checked(&no_chart_yaml),
            Err(ArchiveError::NoChart { .. })
        ));
        assert_eq!(
            checked(&chart("other")),
            Err(ArchiveError::NoChart {
                name: "web".into(),
                expected: "web/Chart.yaml".into()
            }),
            "another chart"
        );
        let a_folder_named_so = archive(&[Entry {
            name: b"web/Chart.yaml",
            kind: tar::EntryType::Directory,
            data: b"",
            link: b"",
        }]);
        assert!(matches!(
            checked(&a_folder_named_so),
            Err(ArchiveError::NoChart { .. })
        ));
        assert!(matches!(
            checked(&archive(&[])),
            Err(ArchiveError::NoChart { .. })
        ));
    }

    #[test]
    fn entries_that_climb_out_or_are_absolute_are_refused() {
        let climbing = archive(&[
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry::file("web/../../etc/cron.d/x", b"* * * * * root id\n"),
        ]);
        assert_eq!(
            checked(&climbing),
            Err(ArchiveError::Climbs {
                path: "web/../../etc/cron.d/x".into()
            })
        );
        let windows = archive(&[
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry::file("web\\..\\..\\x", b""),
        ]);
        assert!(matches!(
            checked(&windows),
            Err(ArchiveError::Climbs { .. })
        ));
        let absolute = archive(&[
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry::file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ]);
        assert!(matches!(
            checked(&absolute),
            Err(ArchiveError::Absolute { .. })
        ));
    }

    #[test]
    fn links_of_any_kind_are_refused() {
        for (kind, link) in [
            (tar::EntryType::Symlink, b"../../../etc/shadow".as_slice()),
            (tar::EntryType::Symlink, b"values.yaml".as_slice()),
            (tar::EntryType::Link, b"web/values.yaml".as_slice()),
        ] {
            let linked = archive(&[
                Entry::file("web/Chart.yaml", b"name: web\n"),
                Entry::file("web/values.yaml", b"a: 1\n"),
                Entry {
                    name: b"web/templates/x.yaml",
                    kind,
                    data: b"",
                    link,
                },
            ]);
            assert!(
                matches!(checked(&linked), Err(ArchiveError::Link { .. })),
                "{kind:?} to {}",
                String::from_utf8_lossy(link)
            );
        }
        let device = archive(&[
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry {
                name: b"web/null",
                kind: tar::EntryType::Char,
                data: b"",
                link: b"",
            },
        ]);
        assert!(matches!(
            checked(&device),
            Err(ArchiveError::NotAFile { .. })
        ));
    }

    #[test]
    fn an_archive_over_its_bounds_is_refused_while_reading() {
        let big = vec![0u8; 256 << 10];
        let large = archive(&[
            Entry::file("web/Chart.yaml", b"name: web\n"),
            Entry::file("web/big.bin", &big),
        ]);
        assert!(
            large.len() < 4 << 10,
            "a bomb: {} bytes packed",
            large.len()
        );
        let bounds = Bounds {
            unpacked_bytes: 128 << 10,
            entries: 10,
        };
        assert_eq!(
            check(&large, &web(), bounds),
            Err(ArchiveError::TooLarge { limit: 128 << 10 })
        );
        let bigger = Bounds {
            unpacked_bytes: 1 << 20,
            ..bounds
        };
        assert_eq!(check(&large, &web(), bigger), Ok(()), "within the bound");

        let names: Vec<String> = (0..11).map(|i| format!("web/templates/{i}.yaml")).collect();
        let mut entries = vec![Entry::file("web/Chart.yaml", b"name: web\n")];
        entries.extend(names.iter().map(|n| Entry::file(n, b"")));
        assert_eq!(
            check(&archive(&entries), &web(), bigger),
            Err(ArchiveError::TooManyEntries { limit: 10 })
        );
    }

    #[test]
    fn the_default_bound_stops_a_gzip_bomb() {
        use std::io::Write;
        let gzip = |bytes: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(bytes).expect("compressed");
            gz.finish().expect("compressed")
        };
        // A tar of one 40 MiB file, as gzip members (a reader takes them
        // as one stream): the header, then one 1 MiB member of zeros
        // repeated, so that the test compresses 1 MiB, not 40.
        let header = |path: &str, size: u64| {
            let mut header = tar::Header::new_gnu();
            header.set_path(path).expect("a path");
            header.set_size(size);
            header.set_mode(0o644);
            header.set_cksum();
            header.as_bytes().to_vec()
        };
        let chart_yaml = b"name: web\n";
        let mut start = header("web/Chart.yaml", chart_yaml.len() as u64);
        start.extend_from_slice(chart_yaml);
        start.resize(1024, 0);
        start.extend(header("web/zeros.bin", 40 << 20));
        let mut bomb = gzip(&start);
        let zeros = gzip(&vec![0u8; 1 << 20]);
        for _ in 0..40 {
            bomb.extend_from_slice(&zeros);
        }
        assert!(bomb.len() < 1 << 20, "{} bytes packed", bomb.len());
        assert_eq!(
            checked(&bomb),
            Err(ArchiveError::TooLarge { limit: 32 << 20 })
        );
    }

    #[test]
    fn what_is_not_a_gzip_tar_is_refused() {
        assert!(matches!(
            checked(b"<html>a login page</html>"),
            Err(ArchiveError::Unreadable(_))
        ));
        let mut truncated = chart("web");
        truncated.truncate(truncated.len() / 2);
        assert!(checked(&truncated).is_err());
    }
}
