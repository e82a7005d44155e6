//! The keychain store's configuration: which keychain, and the options of the URL grammar.

use std::path::PathBuf;
use std::time::Duration;

use token_store_core::layers::CommonOptions;
use token_store_core::{Error, KeySource, Result, StoreUrl};

use crate::DEFAULT_SERVICE;

/// Which keychain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Platform {
    /// Linux Secret Service over D-Bus.
    SecretService,
    /// Linux kernel keyutils (RAM only).
    Keyutils,
    /// macOS Keychain.
    MacOs,
    /// Windows Credential Manager.
    Windows,
}

impl Platform {
    /// This platform's default keychain, if it has one.
    pub fn native() -> Option<Platform> {
        if cfg!(target_os = "linux") {
            Some(Platform::SecretService)
        } else if cfg!(target_os = "macos") {
            Some(Platform::MacOs)
        } else if cfg!(windows) {
            Some(Platform::Windows)
        } else {
            None
        }
    }
}

/// Options of a keychain store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeychainConfig {
    /// The service name every item carries; distinct names are distinct stores.
    pub service: String,
    /// Upper bound of every call (and of connecting).
    pub timeout: Duration,
    /// The D-Bus bus of the Secret Service; `None` for the session bus.
    pub bus_address: Option<String>,
    /// Item size to chunk at on keyring-core platforms; `None` for the platform's limit.
    pub chunk_size: Option<usize>,
    /// Where the cross-process lock files live (an absolute path); `None` for the default
    /// (see [Guarantees](crate#guarantees)). Processes only exclude one another when they
    /// use the same directory.
    pub lock_dir: Option<PathBuf>,
    /// Which keychain; `None` for this platform's default ([`Platform::native`]).
    pub platform: Option<Platform>,
    /// The shared options: `key` adds token-store's own encryption layer on top of the
    /// keychain's. (The per-call limit is [`KeychainConfig::timeout`], not `common.timeout`:
    /// see [Guarantees](crate#guarantees).)
    pub common: CommonOptions,
}

impl Default for KeychainConfig {
    fn default() -> Self {
        KeychainConfig {
            service: DEFAULT_SERVICE.to_owned(),
            timeout: Duration::from_secs(5),
            bus_address: None,
            chunk_size: None,
            lock_dir: None,
            platform: None,
            common: CommonOptions::new(),
        }
    }
}

impl KeychainConfig {
    /// The default config for `platform`.
    pub fn new(platform: Platform) -> Self {
        KeychainConfig::default().with_platform(platform)
    }

    /// The same config for another keychain.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// The same config adding token-store's encryption layer under `key`.
    pub fn with_key(mut self, key: KeySource) -> Self {
        self.common = self.common.with_key(key);
        self
    }

    /// The keychain this config names: its own, else this platform's default.
    pub fn platform(&self) -> Result<Platform> {
        self.platform
            .or_else(Platform::native)
            .ok_or_else(|| Error::config("this platform has no OS keychain token-store can use"))
    }

    /// Reads a `keychain:` URL: `keychain:` (this platform's default),
    /// `keychain:secret-service`, `keychain:keyutils`, `keychain:macos`, `keychain:windows`,
    /// with the parameters of the crate docs. Unknown parameters are refused.
    pub fn from_url(url: &StoreUrl) -> Result<Self> {
        let platform = match url.body().trim_matches('/') {
            "" | "default" => None,
            "secret-service" | "secretservice" => Some(Platform::SecretService),
            "keyutils" => Some(Platform::Keyutils),
            "macos" => Some(Platform::MacOs),
            "windows" => Some(Platform::Windows),
            other => {
                return Err(Error::config(format!(
                    "unknown keychain `{}`: use keychain:, keychain:secret-service, keychain:keyutils, keychain:macos or keychain:windows",
                    other.escape_debug()
                )));
            }
        };
        let mut p = url.params()?;
        let mut config = KeychainConfig {
            platform,
            ..KeychainConfig::default()
        };
        if let Some(service) = p.string("service")? {
            config.service = service;
        }
        if let Some(timeout) = p.timeout()? {
            config.timeout = timeout;
        }
        config.bus_address = p.string("bus")?;
        config.chunk_size = p.parse("chunk_size", "a number of bytes")?;
        if let Some(dir) = p.path("lock_dir")? {
            if !dir.is_absolute() {
                return Err(Error::config(
                    "`lock_dir` must be an absolute path (every process must name the same directory)",
                ));
            }
            config.lock_dir = Some(dir);
        }
        config.common.key = p.key_source()?;
        p.finish()?;
        Ok(config)
    }

    /// The same config with another service name.
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// The same config with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same config talking to the Secret Service on another bus.
    pub fn with_bus_address(mut self, address: impl Into<String>) -> Self {
        self.bus_address = Some(address.into());
        self
    }

    /// The same config chunking items at `size` bytes (keyring-core platforms).
    pub fn with_chunk_size(mut self, size: usize) -> Self {
        self.chunk_size = Some(size);
        self
    }

    /// The same config keeping its cross-process lock files in `dir` (an absolute path,
    /// created 0700 if missing) instead of the default directory.
    pub fn with_lock_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lock_dir = Some(dir.into());
        self
    }
}
