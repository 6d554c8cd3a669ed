use std::io::{Read, Write};

use super::*;

/// Cheap enough for tests; the format records the cost, so reading needs nothing else.
const TEST_COST: KdfCost = KdfCost { memory_kib: 64, passes: 1, lanes: 1 };

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn seal(plain: &[u8], passphrase: &str) -> Vec<u8> {
    let mut writer = SealWriter::with_cost(Vec::new(), passphrase, TEST_COST).unwrap();
    // odd-sized writes, so chunk boundaries fall inside them
    for part in plain.chunks(7_777) {
        writer.write_all(part).unwrap();
    }
    writer.finish().unwrap()
}

fn open(sealed: &[u8], passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let mut reader = OpenReader::new(sealed, passphrase)?;
    let failure = reader.auth_failure();
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(failure.error().unwrap_or_else(|| BackupError::io("read", "test", e))),
    }
}

#[test]
fn round_trips_over_several_chunks_and_at_chunk_boundaries() {
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 12_345] {
        let plain = sample(len);
        let sealed = seal(&plain, "correct horse");
        assert_eq!(&sealed[..4], MAGIC);
        // a full chunk is sealed as the last one when nothing follows it
        let chunks = len.div_ceil(CHUNK).max(1);
        assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG, "len {len}");
        assert_eq!(open(&sealed, "correct horse").unwrap(), plain, "len {len}");
    }
}

#[test]
fn the_same_plaintext_seals_differently_each_time() {
    let plain = sample(1000);
    assert_ne!(seal(&plain, "k"), seal(&plain, "k"), "fresh salt and nonce per archive");
}

#[test]
fn a_wrong_key_is_refused_as_such() {
    let sealed = seal(&sample(3 * CHUNK), "right");
    assert!(matches!(open(&sealed, "wrong"), Err(BackupError::WrongKey)));
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let sealed = seal(&sample(2 * CHUNK + 100), "k");
    // in the header's cost, salt and nonce; in the first, second and last chunk
    for at in [7, 20, 40, HEADER_LEN + 5, HEADER_LEN + CHUNK + TAG + 9, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[at] ^= 0x01;
        let refused = open(&bad, "k");
        assert!(
            matches!(refused, Err(BackupError::WrongKey | BackupError::Tampered(_))),
            "byte {at}: {refused:?}"
        );
    }
    let mut bad = sealed.clone();
    bad[HEADER_LEN + CHUNK + TAG + 9] ^= 0x80;
    assert!(
        matches!(open(&bad, "k"), Err(BackupError::Tampered(_))),
        "a later chunk: tampered, not a wrong key"
    );
}

#[test]
fn a_truncated_file_is_refused() {
    let sealed = seal(&sample(2 * CHUNK + 100), "k");
    // inside the header, at chunk boundaries, inside chunks, one byte short
    for len in [10, HEADER_LEN, HEADER_LEN + CHUNK + TAG, HEADER_LEN + 2 * (CHUNK + TAG), sealed.len() - 1] {
        let refused = open(&sealed[..len], "k");
        assert!(refused.is_err(), "cut at {len}: {refused:?}");
    }
    // dropping whole chunks from the end is refused too: the chunk left last was not sealed as last
    let whole = seal(&sample(2 * CHUNK), "k");
    assert_eq!(whole.len(), HEADER_LEN + 2 * (CHUNK + TAG));
    assert!(matches!(open(&whole[..HEADER_LEN + CHUNK + TAG], "k"), Err(BackupError::WrongKey)));
    assert_eq!(open(&whole, "k").unwrap(), sample(2 * CHUNK));
}

#[test]
fn appended_bytes_are_refused() {
    let mut sealed = seal(&sample(CHUNK + 10), "k");
    sealed.extend_from_slice(&[0u8; 40]);
    assert!(open(&sealed, "k").is_err());
}

#[test]
fn headers_that_are_not_ours_or_ask_too_much_are_refused() {
    assert!(matches!(
        open(b"not an archive at all, long enough for a header ......", "k"),
        Err(BackupError::Tampered(_))
    ));
    let mut sealed = seal(&sample(10), "k");
    sealed[4] = 9;
    assert!(matches!(open(&sealed, "k"), Err(BackupError::UnsupportedFormat(_))));
    let mut greedy = seal(&sample(10), "k");
    greedy[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(open(&greedy, "k"), Err(BackupError::Tampered(_))));
}
