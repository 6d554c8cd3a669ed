//! Generation counters for families of cached pages.
//!
//! A list or search key embeds the current generation of every family it
//! depends on (all lists; a group; a category; a tag), plus the cache epoch. An
//! item change bumps the generations of the families it touched (before and
//! after the change), so every page that might include it becomes unreachable
//! at once, while pages of unrelated families stay cached.
//!
//! The authoritative counters live in Redis (`INCR`), shared by every node;
//! each node mirrors them here. Without Redis (or while it is unreachable) the
//! node bumps its mirror locally and remembers which families it bumped, so they
//! can be bumped in Redis too once it is back.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// A family of cached pages an item change can affect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// Bumped by a cache flush: every key embeds it.
    Epoch,
    /// Every unfiltered list, search, categories and trending page.
    All,
    /// Lists filtered by this group.
    Group(String),
    /// Lists filtered by this category code.
    Category(String),
    /// Lists filtered by this tag.
    Tag(String),
    /// Every entry of a namespace other than Explore's pages, e.g. `inference`
    /// (the response cache): bumping it drops the whole namespace.
    Namespace(String),
}

impl Family {
    /// The counter's key (unprefixed), e.g. `gen:cat:cs.CV`.
    pub fn counter_key(&self) -> String {
        match self {
            Self::Epoch => "gen:epoch".to_owned(),
            Self::All => "gen:all".to_owned(),
            Self::Group(g) => format!("gen:group:{g}"),
            Self::Category(c) => format!("gen:cat:{c}"),
            Self::Tag(t) => format!("gen:tag:{t}"),
            Self::Namespace(n) => format!("gen:ns:{n}"),
        }
    }
}

#[derive(Default)]
struct Inner {
    values: HashMap<Family, i64>,
    /// Families whose value was read from Redis (or bumped there) at least once.
    synced: HashSet<Family>,
    /// Families bumped locally while Redis was unreachable.
    dirty: HashSet<Family>,
}

/// This node's mirror of the generation counters.
#[derive(Default)]
pub struct Generations {
    inner: RwLock<Inner>,
}

impl Generations {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation of a family (0 when never bumped).
    pub fn get(&self, family: &Family) -> i64 {
        self.read().values.get(family).copied().unwrap_or(0)
    }

    /// Families not read from Redis yet.
    pub fn unsynced<'a>(&self, families: &'a [Family]) -> Vec<&'a Family> {
        let inner = self.read();
        families.iter().filter(|f| !inner.synced.contains(*f)).collect()
    }

    /// Takes a value seen in Redis (or announced by another node): the mirror only moves forward.
    /// Returns whether it changed.
    pub fn observe(&self, family: &Family, value: i64) -> bool {
        let mut inner = self.write();
        inner.synced.insert(family.clone());
        let current = inner.values.entry(family.clone()).or_insert(0);
        if value > *current {
            *current = value;
            true
        } else {
            false
        }
    }

    /// Bumps a family locally (Redis unreachable); remembers it for a later Redis bump.
    pub fn bump_local(&self, family: &Family) -> i64 {
        let mut inner = self.write();
        inner.dirty.insert(family.clone());
        let current = inner.values.entry(family.clone()).or_insert(0);
        *current += 1;
        *current
    }

    /// Families bumped locally since the last call.
    pub fn take_dirty(&self) -> Vec<Family> {
        let mut inner = self.write();
        let mut dirty: Vec<Family> = inner.dirty.drain().collect();
        dirty.sort();
        dirty
    }

    /// Whether some family is still to be bumped in Redis.
    pub fn has_dirty(&self) -> bool {
        !self.read().dirty.is_empty()
    }

    /// Marks `families` to be bumped in Redis again (a push of them was cut short),
    /// without bumping them locally.
    pub fn mark_dirty(&self, families: &[Family]) {
        self.write().dirty.extend(families.iter().cloned());
    }

    /// Forgets which families were read from Redis, so they are read again (after a reconnect).
    pub fn mark_unsynced(&self) {
        self.write().synced.clear();
    }

    /// Forgets every value (not the dirty set): the next reads take Redis's values as they are.
    /// Safe only with L1 flushed, since keys built before may carry higher local values.
    pub fn reset(&self) {
        let mut inner = self.write();
        inner.values.clear();
        inner.synced.clear();
    }

    /// Whether the epoch and every one of `families` have been read from Redis
    /// (one read lock, no allocation: the check every cached read makes).
    pub fn all_synced(&self, families: &[Family]) -> bool {
        let inner = self.read();
        inner.synced.contains(&Family::Epoch) && families.iter().all(|f| inner.synced.contains(f))
    }

    /// The generation stamp of a key that depends on `families`: e.g. `e3.a7` or `e3.c2.t5.t1`.
    pub fn stamp(&self, families: &[Family]) -> String {
        let mut out = String::with_capacity(8 + 4 * families.len());
        self.write_stamp(&mut out, families);
        out
    }

    /// The cache key `{kind}:{stamp}:{identity}` of a page that depends on `families`.
    pub fn key(&self, kind: &str, families: &[Family], identity: &str) -> String {
        let mut out = String::with_capacity(kind.len() + identity.len() + 10 + 4 * families.len());
        out.push_str(kind);
        out.push(':');
        self.write_stamp(&mut out, families);
        out.push(':');
        out.push_str(identity);
        out
    }

    fn write_stamp(&self, out: &mut String, families: &[Family]) {
        let inner = self.read();
        let _ = write!(out, "e{}", inner.values.get(&Family::Epoch).copied().unwrap_or(0));
        for family in families {
            let prefix = match family {
                Family::Epoch => continue,
                Family::All => 'a',
                Family::Group(_) => 'g',
                Family::Category(_) => 'c',
                Family::Tag(_) => 't',
                Family::Namespace(_) => 'n',
            };
            let _ = write!(out, ".{prefix}{}", inner.values.get(family).copied().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_change_only_for_touched_families() {
        let g = Generations::default();
        let cv = [Family::Category("cs.CV".into())];
        let lg = [Family::Category("cs.LG".into())];
        let all = [Family::All];
        let (cv0, lg0, all0) = (g.stamp(&cv), g.stamp(&lg), g.stamp(&all));
        g.bump_local(&Family::Category("cs.CV".into()));
        g.bump_local(&Family::All);
        assert_ne!(g.stamp(&cv), cv0);
        assert_eq!(g.stamp(&lg), lg0);
        assert_ne!(g.stamp(&all), all0);
        g.bump_local(&Family::Epoch);
        assert_ne!(g.stamp(&lg), lg0, "the epoch reaches every key");
    }

    #[test]
    fn observe_only_moves_forward_and_dirty_is_drained() {
        let g = Generations::default();
        let f = Family::Tag("cs.AI".into());
        assert!(g.observe(&f, 5));
        assert!(!g.observe(&f, 3));
        assert_eq!(g.get(&f), 5);
        assert!(g.unsynced(std::slice::from_ref(&f)).is_empty());
        g.bump_local(&f);
        assert_eq!(g.get(&f), 6);
        assert_eq!(g.take_dirty(), vec![f.clone()]);
        assert!(g.take_dirty().is_empty());
        g.mark_unsynced();
        assert_eq!(g.unsynced(std::slice::from_ref(&f)).len(), 1);
    }

    #[test]
    fn all_synced_needs_the_epoch_and_every_family() {
        let g = Generations::default();
        let f = Family::Group("Physics".into());
        assert!(!g.all_synced(&[]), "the epoch is not synced yet");
        g.observe(&Family::Epoch, 0);
        assert!(g.all_synced(&[]));
        assert!(!g.all_synced(std::slice::from_ref(&f)));
        g.observe(&f, 2);
        assert!(g.all_synced(std::slice::from_ref(&f)));
        g.mark_unsynced();
        assert!(!g.all_synced(&[]));
    }

    #[test]
    fn key_is_kind_stamp_identity() {
        let g = Generations::default();
        g.bump_local(&Family::Epoch);
        g.observe(&Family::Category("cs.CV".into()), 4);
        let families = [Family::Category("cs.CV".into()), Family::Tag("cs.AI".into())];
        assert_eq!(g.key("list", &families, "abc"), format!("list:{}:abc", g.stamp(&families)));
        assert_eq!(g.key("list", &families, "abc"), "list:e1.c4.t0:abc");
        assert_eq!(g.key("item", &[], "2506.1"), "item:e1:2506.1");
    }
}
