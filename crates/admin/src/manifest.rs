//! A backup's table of contents (`manifest.json`, written last: a directory without one is
//! not a backup). What a restore needs besides the parts: the marks taken before the first
//! part — where every stream ended and where every durable consumer had acknowledged up to —
//! and the order the parts were taken in.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The manifest's own format; a restore refuses others.
pub const FORMAT: u32 = 1;
/// Its file name in the backup directory.
pub const FILE: &str = "manifest.json";

/// A backup's table of contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The orderflow build that took it.
    pub version: String,
    /// The subject layout its streams hold.
    pub layout: u32,
    /// How many partitions each event domain has.
    pub partitions: u16,
    /// When the marks were taken.
    pub started: DateTime<Utc>,
    /// When the last part was written.
    pub finished: DateTime<Utc>,
    /// Where things stood before the first part.
    pub marks: Marks,
    /// The parts, in the order they were taken.
    pub parts: Vec<Part>,
}

/// Where things stood before the first part was taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marks {
    /// Each stream's last sequence.
    pub streams: BTreeMap<String, u64>,
    /// Each durable consumer's acknowledgement floor.
    pub consumers: Vec<ConsumerMark>,
}

/// A durable consumer's acknowledgement floor: every message up to it was handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMark {
    /// The stream.
    pub stream: String,
    /// The durable name.
    pub durable: String,
    /// The stream sequence every message up to which is acknowledged.
    pub ack_floor: u64,
}

/// One part of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
    /// A stream's snapshot, as the server made it.
    Stream {
        /// The stream.
        name: String,
        /// The file, relative to the backup directory.
        file: String,
        /// Its configuration when taken.
        config: Value,
        /// Its last sequence when the snapshot started.
        last_sequence: u64,
        /// Bytes.
        bytes: u64,
        /// Its SHA-256, checked before a restore reads it.
        sha256: String,
        /// Seconds it took.
        seconds: f64,
    },
    /// A KV bucket, record by record (one JSON object per line: key, revision, value).
    Bucket {
        /// The bucket.
        name: String,
        /// The file, relative to the backup directory.
        file: String,
        /// Records.
        records: u64,
        /// Bytes.
        bytes: u64,
        /// Its SHA-256, checked before a restore reads it.
        sha256: String,
        /// Seconds it took.
        seconds: f64,
    },
    /// The PostgreSQL archive, as `pg_dump --format=custom` wrote it.
    Archive {
        /// The file, relative to the backup directory.
        file: String,
        /// Bytes.
        bytes: u64,
        /// Its SHA-256, checked before a restore reads it.
        sha256: String,
        /// Seconds it took.
        seconds: f64,
    },
}

impl Part {
    /// The part's file (relative to the backup directory), bytes and SHA-256.
    pub fn file(&self) -> (&str, u64, &str) {
        match self {
            Self::Stream {
                file,
                bytes,
                sha256,
                ..
            }
            | Self::Bucket {
                file,
                bytes,
                sha256,
                ..
            }
            | Self::Archive {
                file,
                bytes,
                sha256,
                ..
            } => (file, *bytes, sha256),
        }
    }

    /// Bytes of the part.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Stream { bytes, .. }
            | Self::Bucket { bytes, .. }
            | Self::Archive { bytes, .. } => *bytes,
        }
    }
}

/// One KV record in a bucket part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The revision it was copied at.
    pub revision: u64,
    /// The value (every bucket of the system holds JSON text).
    pub value: String,
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = (self.finished - self.started).as_seconds_f64();
        writeln!(
            f,
            "backed up {} bytes in {seconds:.1}s (layout {}, {} partitions):",
            self.bytes(),
            self.layout,
            self.partitions
        )?;
        for part in &self.parts {
            match part {
                Part::Stream {
                    name,
                    last_sequence,
                    bytes,
                    ..
                } => writeln!(f, "  stream {name}: up to {last_sequence}, {bytes} bytes")?,
                Part::Bucket {
                    name,
                    records,
                    bytes,
                    ..
                } => writeln!(f, "  bucket {name}: {records} records, {bytes} bytes")?,
                Part::Archive { bytes, .. } => writeln!(f, "  archive: {bytes} bytes")?,
            }
        }
        write!(f, "  consumer marks: {}", self.marks.consumers.len())
    }
}

impl Manifest {
    /// Reads the manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (a backup whose manifest is missing was not finished)",
                path.display()
            )
        })?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if manifest.format != FORMAT {
            return Err(format!(
                "{} is in backup format {}; this build reads format {FORMAT}",
                path.display(),
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// Bytes of every part.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(Part::bytes).sum()
    }

    /// Checks that every part in `dir` is whole: its size and SHA-256 as taken.
    pub fn verify(&self, dir: &Path) -> Result<(), String> {
        for part in &self.parts {
            let (file, bytes, sha256) = part.file();
            let path = dir.join(file);
            let (found_bytes, found) =
                digest(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if found_bytes != bytes || found != sha256 {
                return Err(format!(
                    "{} is damaged or incomplete ({found_bytes} bytes, SHA-256 {found}; the backup took {bytes} bytes, {sha256})",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// A file's size and SHA-256 (hex).
pub fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((bytes, format!("{:x}", hasher.finalize())))
}
