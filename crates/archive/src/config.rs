//! How to reach the archive: settings read from the environment (or flags) by clap, with a
//! working local default. The URL may carry a password, so it is held as a [`Secret`] and only
//! its host, port and database are ever shown.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bus::Secret;
use sqlx::postgres::PgConnectOptions;

/// clap value parser: the archive URL, kept secret (it may hold a password).
fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

/// How long archived orders are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// For ever (the default): deleting history is the operator's decision.
    Keep,
    /// This long after the order was placed.
    For(Duration),
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.trim() == "keep" {
            return Ok(Self::Keep);
        }
        match humantime::parse_duration(value.trim()) {
            Ok(age) if !age.is_zero() => Ok(Self::For(age)),
            Ok(_) => Err("a retention of zero would delete every order: use `keep` or a duration such as `3650d`".into()),
            Err(e) => Err(format!("{value:?} is neither `keep` nor a duration such as `3650d`: {e}")),
        }
    }
}

/// The archive's connection and retention.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveArgs {
    /// PostgreSQL URL of the order archive (`postgres://user@host:5432/database`, TLS with
    /// `?sslmode=verify-full&sslrootcert=...`). Give the password with ARCHIVE_PASSWORD_FILE
    /// rather than in the URL. `none`: no archive — only allowed with HOT_WINDOW=0.
    #[arg(
        long,
        env = "ARCHIVE_URL",
        default_value = "postgres://orderflow@127.0.0.1:5432/orderflow",
        hide_default_value = true,
        hide_env_values = true,
        value_parser = secret
    )]
    pub archive_url: Secret,
    /// The archive user's password (or give ARCHIVE_PASSWORD_FILE).
    #[arg(long, env = "ARCHIVE_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub archive_password: Option<Secret>,
    /// File holding the archive user's password (a Docker or Kubernetes secret).
    #[arg(long, env = "ARCHIVE_PASSWORD_FILE")]
    pub archive_password_file: Option<PathBuf>,
    /// The user order-service's API reads the archive as: same host and database as
    /// ARCHIVE_URL, granted only SELECT (the migrations grant `orderflow_reader`). Unset: the
    /// API reads as ARCHIVE_URL's user.
    #[arg(long, env = "ARCHIVE_READER_USER")]
    pub archive_reader_user: Option<String>,
    /// The reading user's password (or give ARCHIVE_READER_PASSWORD_FILE).
    #[arg(long, env = "ARCHIVE_READER_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub archive_reader_password: Option<Secret>,
    /// File holding the reading user's password.
    #[arg(long, env = "ARCHIVE_READER_PASSWORD_FILE")]
    pub archive_reader_password_file: Option<PathBuf>,
    /// Most connections this process opens to the archive (for each user).
    #[arg(long, env = "ARCHIVE_POOL_SIZE", default_value_t = 8)]
    pub archive_pool_size: u32,
    /// How long archived orders are kept after placement (`3650d`); `keep` keeps them for ever.
    #[arg(long, env = "ARCHIVE_RETENTION", default_value = "keep")]
    pub archive_retention: Retention,
}

impl Default for ArchiveArgs {
    fn default() -> Self {
        Self {
            archive_url: Secret::new("postgres://orderflow@127.0.0.1:5432/orderflow"),
            archive_password: None,
            archive_password_file: None,
            archive_reader_user: None,
            archive_reader_password: None,
            archive_reader_password_file: None,
            archive_pool_size: 8,
            archive_retention: Retention::Keep,
        }
    }
}

/// The archive settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveConfigError {
    /// The URL does not parse (its text is not repeated: it may hold a password).
    #[error("ARCHIVE_URL is not a PostgreSQL URL: {0}")]
    Url(String),
    /// A password file could not be read.
    #[error("cannot read {setting}_FILE {path}: {source}")]
    PasswordFile {
        /// The setting whose `_FILE` named it.
        setting: &'static str,
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Both ways of giving a password were used.
    #[error("set {0} or {0}_FILE, not both")]
    BothPasswords(&'static str),
    /// A password that is a demo value or easy to guess.
    #[error("{setting} is refused: {why}")]
    WeakPassword {
        /// The setting.
        setting: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A reader's password without a reader.
    #[error("ARCHIVE_READER_PASSWORD(_FILE) is set without ARCHIVE_READER_USER")]
    ReaderPasswordWithoutUser,
    /// A pool of no connections could never answer.
    #[error("ARCHIVE_POOL_SIZE must be at least 1")]
    PoolSize,
}

impl ArchiveArgs {
    /// The connection options of ARCHIVE_URL's user (the projection's, who writes), or `None`
    /// when no archive is configured (an empty URL or `none`).
    pub fn connect_options(&self) -> Result<Option<PgConnectOptions>, ArchiveConfigError> {
        let Some(options) = self.base_options()? else {
            return Ok(None);
        };
        let options = with_password(
            options,
            "ARCHIVE_PASSWORD",
            self.archive_password.as_ref(),
            self.archive_password_file.as_ref(),
        )?;
        Ok(Some(finish(options)))
    }

    /// The connection options of the reading user (ARCHIVE_READER_USER): ARCHIVE_URL's host
    /// and database, that user and its password. `None` when no reader is set (or no archive).
    pub fn reader_options(&self) -> Result<Option<PgConnectOptions>, ArchiveConfigError> {
        let user = self
            .archive_reader_user
            .as_deref()
            .map(str::trim)
            .filter(|user| !user.is_empty());
        let Some(user) = user else {
            if self.archive_reader_password.is_some() || self.archive_reader_password_file.is_some()
            {
                return Err(ArchiveConfigError::ReaderPasswordWithoutUser);
            }
            return Ok(None);
        };
        let Some(options) = self.base_options()? else {
            return Ok(None);
        };
        // Everything else ARCHIVE_URL says (host, database, TLS) holds for the reader too — but
        // not a password written into it: that is the writer's, never sent as the reader's.
        let options = options.username(user).password("");
        let options = with_password(
            options,
            "ARCHIVE_READER_PASSWORD",
            self.archive_reader_password.as_ref(),
            self.archive_reader_password_file.as_ref(),
        )?;
        Ok(Some(finish(options)))
    }

    /// How PostgreSQL's own tools (`pg_dump`, `pg_restore`) reach the archive as ARCHIVE_URL's
    /// user: the URL without a password in it, and the password to give them in `PGPASSWORD`
    /// (never on their command line, where every user of the host can read it). `None` when
    /// no archive is configured.
    pub fn libpq(&self) -> Result<Option<Libpq>, ArchiveConfigError> {
        if self.base_options()?.is_none() {
            return Ok(None);
        }
        let expected =
            || ArchiveConfigError::Url("expected postgres://user@host:port/database".into());
        let mut url = url::Url::parse(self.archive_url.expose().trim()).map_err(|_| expected())?;
        // The tools would pass these on their command line: refused, not stripped.
        if url
            .query_pairs()
            .any(|(key, _)| key == "password" || key == "sslpassword")
        {
            return Err(ArchiveConfigError::Url(
                "give the password with ARCHIVE_PASSWORD_FILE, not in ARCHIVE_URL's query".into(),
            ));
        }
        let inline = url
            .password()
            .map(|p| Secret::new(percent_decoded(p)))
            .filter(|p| !p.expose().is_empty());
        url.set_password(None).map_err(|()| expected())?;
        let password = match (&self.archive_password, &self.archive_password_file) {
            (None, None) => inline,
            (inline, file) => Some(read_password(
                "ARCHIVE_PASSWORD",
                inline.as_ref(),
                file.as_ref(),
            )?),
        };
        Ok(Some(Libpq {
            url: url.to_string(),
            password,
        }))
    }

    /// ARCHIVE_URL parsed, without a password from elsewhere.
    fn base_options(&self) -> Result<Option<PgConnectOptions>, ArchiveConfigError> {
        let url = self.archive_url.expose().trim();
        if url.is_empty() || url == "none" {
            return Ok(None);
        }
        if self.archive_pool_size == 0 {
            return Err(ArchiveConfigError::PoolSize);
        }
        // sqlx's error may quote the URL (and `PgConnectOptions`' Debug output shows the
        // password): say only what is expected, and never print the options.
        let expected =
            || ArchiveConfigError::Url("expected postgres://user@host:port/database".into());
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(expected());
        }
        PgConnectOptions::from_str(url)
            .map(Some)
            .map_err(|_| expected())
    }
}

/// How PostgreSQL's tools reach the archive ([`ArchiveArgs::libpq`]).
#[derive(Debug, Clone)]
pub struct Libpq {
    /// The connection URL, with no password in it.
    pub url: String,
    /// The password, for `PGPASSWORD`.
    pub password: Option<Secret>,
}

/// `options` with the password given inline or in a file (a Docker or Kubernetes secret).
fn with_password(
    options: PgConnectOptions,
    setting: &'static str,
    inline: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<PgConnectOptions, ArchiveConfigError> {
    if inline.is_none() && file.is_none() {
        return Ok(options);
    }
    let password = read_password(setting, inline, file)?;
    Ok(options.password(password.expose()))
}

/// The password given inline or in a file, refused if weak.
fn read_password(
    setting: &'static str,
    inline: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<Secret, ArchiveConfigError> {
    let password = match (inline, file) {
        (Some(_), Some(_)) => return Err(ArchiveConfigError::BothPasswords(setting)),
        (Some(password), None) => password.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| {
                ArchiveConfigError::PasswordFile {
                    setting,
                    path: path.clone(),
                    source,
                }
            })?;
            let password = text.strip_suffix('\n').unwrap_or(&text);
            Secret::new(password.strip_suffix('\r').unwrap_or(password))
        }
        (None, None) => Secret::new(""),
    };
    if let Some(why) = password.weakness() {
        return Err(ArchiveConfigError::WeakPassword { setting, why });
    }
    Ok(password)
}

/// A URL's percent-encoded user information, decoded (`+` stays `+`: this is not a form).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// What every connection sets.
fn finish(options: PgConnectOptions) -> PgConnectOptions {
    // A statement that hangs (a lock, a stalled disk) fails instead of holding its caller.
    options
        .options([("statement_timeout", "15s")])
        .application_name("orderflow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_keep_or_a_positive_duration() {
        assert_eq!("keep".parse(), Ok(Retention::Keep));
        assert_eq!(
            "3650d".parse(),
            Ok(Retention::For(Duration::from_secs(3650 * 86_400)))
        );
        assert!("0s".parse::<Retention>().is_err());
        assert!("forever".parse::<Retention>().is_err());
    }

    #[test]
    fn postgres_tools_get_the_url_without_its_password_and_the_password_apart() {
        let args = ArchiveArgs {
            archive_url: Secret::new(
                "postgres://app:s%2Bcr3t%40Xq9w@db.internal:5433/shop?sslmode=require",
            ),
            ..ArchiveArgs::default()
        };
        let libpq = args.libpq().unwrap().unwrap();
        assert_eq!(
            libpq.url,
            "postgres://app@db.internal:5433/shop?sslmode=require"
        );
        assert_eq!(libpq.password.unwrap().expose(), "s+cr3t@Xq9w");
        let args = ArchiveArgs {
            archive_password: Some(Secret::new("another-Long-pass-9")),
            ..args
        };
        let libpq = args.libpq().unwrap().unwrap();
        assert_eq!(libpq.password.unwrap().expose(), "another-Long-pass-9");
        let in_query = ArchiveArgs {
            archive_url: Secret::new("postgres://app@db/shop?password=x"),
            archive_password: None,
            ..args
        };
        assert!(in_query.libpq().is_err());
    }

    #[test]
    fn none_means_no_archive() {
        let args = ArchiveArgs {
            archive_url: Secret::new("none"),
            ..ArchiveArgs::default()
        };
        assert!(args.connect_options().unwrap().is_none());
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let args = ArchiveArgs {
            archive_url: Secret::new("mysql://root:hunter2@db/orders"),
            ..ArchiveArgs::default()
        };
        let error = args.connect_options().unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn the_password_comes_from_its_file_and_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret-from-a-file\n").unwrap();
        let args = ArchiveArgs {
            archive_url: Secret::new("postgres://orderflow:inline-s3cret@db:5432/orderflow"),
            archive_password_file: Some(path),
            ..ArchiveArgs::default()
        };
        assert!(!format!("{args:?}").contains("inline-s3cret"));
        let options = args.connect_options().unwrap().unwrap();
        assert_eq!(options.get_host(), "db");
        let archive = crate::Archive::connect_lazy(options, 1);
        assert!(!format!("{archive:?}").contains("s3cret"), "{archive:?}");
    }
}
