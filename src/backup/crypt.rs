//! Encryption at rest: the archive's bytes sealed by the STREAM construction
//! (Hoang, Reyhanitabar, Rogaway, Vizár) over XChaCha20-Poly1305, in chunks of
//! [`CHUNK`] bytes, so that neither side ever holds more than a chunk.
//!
//! File layout: a [`HEADER_LEN`]-byte header, then the sealed chunks (each
//! [`CHUNK`] + 16 bytes, the last one shorter and flagged as last):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `CWBK` |
//! | 1 | format version (1) |
//! | 1 | key derivation: 1 = Argon2id v1.3 |
//! | 4, 4, 4 | Argon2 memory (KiB), passes, lanes, big-endian |
//! | 16 | random salt |
//! | 19 | random nonce prefix of the big-endian 32-bit STREAM |
//!
//! The key is Argon2id(passphrase, salt). The whole header is the associated data of
//! every chunk, so no header byte can change unnoticed. Each chunk's nonce carries
//! its position and a last-chunk flag: reordered, dropped or appended chunks and a
//! file cut anywhere fail authentication.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305};
use rand::RngCore;

use super::BackupError;

/// The first bytes of an encrypted archive.
pub const MAGIC: &[u8; 4] = b"CWBK";
/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag appended to each chunk.
const TAG: usize = 16;
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const SALT: usize = 16;
/// XChaCha20's 24-byte nonce less the STREAM's 4-byte counter and 1-byte flag.
const NONCE_PREFIX: usize = 19;
/// Length of the header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 12 + SALT + NONCE_PREFIX;

/// Argon2id cost of the key derivation: 64 MiB, 3 passes, 1 lane (a fraction of a
/// second, once per backup or restore).
pub const KDF_COST: KdfCost = KdfCost { memory_kib: 64 * 1024, passes: 3, lanes: 1 };
/// Largest costs a header may ask for: a forged header cannot make a restore
/// allocate more than 1 GiB or run for minutes.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_PASSES: u32 = 32;
const MAX_LANES: u32 = 16;

/// Argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

/// Which chunk failed authentication, as seen by whoever reads through an [`OpenReader`].
#[derive(Debug, Clone, Default)]
pub struct AuthFailure(Arc<AtomicU8>);

const AUTH_FIRST_CHUNK: u8 = 1;
const AUTH_LATER_CHUNK: u8 = 2;

impl AuthFailure {
    /// The error to report when reading failed, if authentication is why.
    pub fn error(&self) -> Option<BackupError> {
        match self.0.load(Ordering::Acquire) {
            AUTH_FIRST_CHUNK => Some(BackupError::WrongKey),
            AUTH_LATER_CHUNK => Some(BackupError::Tampered(
                "a sealed chunk failed authentication (the file was altered or cut short)".to_owned(),
            )),
            _ => None, // authentication did not fail
        }
    }
}

fn derive_key(passphrase: &str, salt: &[u8], cost: KdfCost) -> Result<Key, BackupError> {
    let params = Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32))
        .map_err(|e| BackupError::Key(format!("invalid key derivation parameters: {e}")))?;
    let mut key = Key::default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| BackupError::Key(format!("key derivation failed: {e}")))?;
    Ok(key)
}

fn header(cost: KdfCost, salt: &[u8; SALT], nonce: &[u8; NONCE_PREFIX]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    let mut at = 0;
    for part in [
        &MAGIC[..],
        &[VERSION, KDF_ARGON2ID],
        &cost.memory_kib.to_be_bytes(),
        &cost.passes.to_be_bytes(),
        &cost.lanes.to_be_bytes(),
        salt,
        nonce,
    ] {
        header[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    header
}

fn sealing_failed() -> io::Error {
    io::Error::other("encryption failed (the archive is too large for one STREAM)")
}

/// Seals everything written to it and writes the result to `inner`. Call
/// [`SealWriter::finish`] at the end: a writer dropped without it leaves a file
/// that fails authentication.
pub struct SealWriter<W: Write> {
    inner: W,
    stream: Option<EncryptorBE32<XChaCha20Poly1305>>,
    header: [u8; HEADER_LEN],
    buffer: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    /// Derives the key from `passphrase` with a fresh salt and writes the header.
    pub fn new(inner: W, passphrase: &str) -> Result<Self, BackupError> {
        Self::with_cost(inner, passphrase, KDF_COST)
    }

    /// [`SealWriter::new`] with a chosen key-derivation cost.
    pub fn with_cost(mut inner: W, passphrase: &str, cost: KdfCost) -> Result<Self, BackupError> {
        let mut salt = [0u8; SALT];
        let mut nonce = [0u8; NONCE_PREFIX];
        let mut rng = rand::rng();
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut nonce);
        let key = derive_key(passphrase, &salt, cost)?;
        let header = header(cost, &salt, &nonce);
        inner.write_all(&header).map_err(|source| BackupError::io("write", "the archive header", source))?;
        let stream = EncryptorBE32::from_aead(XChaCha20Poly1305::new(&key), &nonce.into());
        Ok(Self { inner, stream: Some(stream), header, buffer: Vec::with_capacity(CHUNK + TAG) })
    }

    fn seal_next(&mut self) -> io::Result<()> {
        let stream = self.stream.as_mut().ok_or_else(sealing_failed)?;
        stream.encrypt_next_in_place(&self.header, &mut self.buffer).map_err(|_| sealing_failed())?;
        self.inner.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Seals the last chunk (possibly empty), flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let stream = self.stream.take().ok_or_else(sealing_failed)?;
        stream.encrypt_last_in_place(&self.header, &mut self.buffer).map_err(|_| sealing_failed())?;
        self.inner.write_all(&self.buffer)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full chunk is sealed only once more data comes, so that `finish` can
        // always flag the true last chunk.
        if self.buffer.len() == CHUNK {
            self.seal_next()?;
        }
        let taken = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and authenticates what a [`SealWriter`] wrote. A chunk that fails
/// authentication makes `read` fail with `InvalidData`, and records which chunk
/// in the [`AuthFailure`] handle.
pub struct OpenReader<R: Read> {
    inner: R,
    stream: Option<DecryptorBE32<XChaCha20Poly1305>>,
    header: [u8; HEADER_LEN],
    /// Ciphertext read ahead: up to one chunk and one byte, to know whether the
    /// chunk in hand is the last.
    sealed: Vec<u8>,
    plain: Vec<u8>,
    at: usize,
    chunks: u64,
    failure: AuthFailure,
}

impl<R: Read> OpenReader<R> {
    /// Reads the header of `inner` and derives the key from `passphrase`.
    pub fn new(mut inner: R, passphrase: &str) -> Result<Self, BackupError> {
        let mut header = [0u8; HEADER_LEN];
        inner
            .read_exact(&mut header)
            .map_err(|_| BackupError::Tampered("the encrypted archive ends inside its header".to_owned()))?;
        let word =
            |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        if &header[..4] != MAGIC {
            return Err(BackupError::Tampered("not an encrypted castwork archive".to_owned()));
        }
        if header[4] != VERSION || header[5] != KDF_ARGON2ID {
            return Err(BackupError::UnsupportedFormat(format!(
                "encryption version {} with key derivation {} (this build reads version {VERSION} with Argon2id)",
                header[4], header[5]
            )));
        }
        let cost = KdfCost { memory_kib: word(6), passes: word(10), lanes: word(14) };
        if cost.memory_kib > MAX_MEMORY_KIB || cost.passes > MAX_PASSES || cost.lanes > MAX_LANES {
            return Err(BackupError::Tampered(format!("key derivation cost out of bounds: {cost:?}")));
        }
        let salt = &header[18..18 + SALT];
        let nonce: [u8; NONCE_PREFIX] = header[18 + SALT..]
            .try_into()
            .map_err(|_| BackupError::Tampered("the encrypted archive's header is malformed".to_owned()))?;
        let key = derive_key(passphrase, salt, cost)?;
        let stream = DecryptorBE32::from_aead(XChaCha20Poly1305::new(&key), &nonce.into());
        Ok(Self {
            inner,
            stream: Some(stream),
            header,
            sealed: Vec::with_capacity(CHUNK + TAG + 1),
            plain: Vec::new(),
            at: 0,
            chunks: 0,
            failure: AuthFailure::default(),
        })
    }

    /// A handle that tells, after a failed read, whether authentication failed.
    pub fn auth_failure(&self) -> AuthFailure {
        self.failure.clone()
    }

    fn refuse(&self) -> io::Error {
        let code = if self.chunks == 0 { AUTH_FIRST_CHUNK } else { AUTH_LATER_CHUNK };
        self.failure.0.store(code, Ordering::Release);
        io::Error::new(io::ErrorKind::InvalidData, "backup chunk failed authentication")
    }

    /// Opens the next chunk into `plain`; leaves `plain` empty at the end.
    fn open_next(&mut self) -> io::Result<()> {
        self.plain.clear();
        self.at = 0;
        if self.stream.is_none() {
            return Ok(());
        }
        let want = CHUNK + TAG + 1;
        while self.sealed.len() < want {
            let have = self.sealed.len();
            self.sealed.resize(want, 0);
            let read = match self.inner.read(&mut self.sealed[have..]) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.sealed.truncate(have);
                    return Err(e);
                }
            };
            self.sealed.truncate(have + read);
            if read == 0 {
                break;
            }
        }
        let last = self.sealed.len() < want;
        let take = if last { self.sealed.len() } else { CHUNK + TAG };
        self.plain.extend_from_slice(&self.sealed[..take]);
        self.sealed.drain(..take);
        let opened = if last {
            match self.stream.take() {
                Some(stream) => stream.decrypt_last_in_place(&self.header, &mut self.plain),
                None => return Ok(()),
            }
        } else {
            match self.stream.as_mut() {
                Some(stream) => stream.decrypt_next_in_place(&self.header, &mut self.plain),
                None => return Ok(()),
            }
        };
        if opened.is_err() {
            self.plain.clear();
            self.stream = None;
            return Err(self.refuse());
        }
        self.chunks += 1;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.stream.is_none() {
                return Ok(0);
            }
            self.open_next()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
