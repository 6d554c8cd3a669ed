//! Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): rankings
//! of different kinds (full-text bm25 scores, cosine similarities) are combined by
//! rank alone, so their scores need no common scale. An item at rank `r` (from 1)
//! of a ranking earns `1 / (k + r)`; its fused score is the sum over the rankings
//! it appears in. `k` = 60 damps the weight of the very first ranks, so an item
//! that both rankings place well beats one that only one places first.

use std::collections::HashMap;

/// The usual constant.
pub const RRF_K: f64 = 60.0;

/// An item of the fused ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: String,
    /// The sum of `1 / (k + rank)` over the rankings that hold the item.
    pub score: f64,
    /// Its rank (from 1) in each input ranking, in their order; `None` where absent.
    pub ranks: Vec<Option<usize>>,
}

impl Fused {
    fn best_rank(&self) -> usize {
        self.ranks.iter().flatten().copied().min().unwrap_or(usize::MAX)
    }
}

/// Fuses `rankings` (each a list of ids, best first) with constant `k`: every id
/// that appears in any of them, best fused score first; ties by best single rank,
/// then by id. An id repeated within one ranking counts at its first place.
pub fn reciprocal_rank_fusion<S: AsRef<str>>(rankings: &[Vec<S>], k: f64) -> Vec<Fused> {
    let mut fused: Vec<Fused> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (which, ranking) in rankings.iter().enumerate() {
        for (place, id) in ranking.iter().enumerate() {
            let id = id.as_ref();
            let slot = *at.entry(id).or_insert_with(|| {
                fused.push(Fused { id: id.to_owned(), score: 0.0, ranks: vec![None; rankings.len()] });
                fused.len() - 1
            });
            let entry = &mut fused[slot];
            if entry.ranks[which].is_none() {
                let rank = place + 1;
                entry.ranks[which] = Some(rank);
                entry.score += 1.0 / (k + rank as f64);
            }
        }
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.best_rank().cmp(&b.best_rank()))
            .then_with(|| a.id.cmp(&b.id))
    });
    fused
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn order(fused: &[Fused]) -> Vec<&str> {
        fused.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn an_item_both_rankings_hold_beats_one_only_one_holds_first() {
        let text = vec!["a", "b", "c"];
        let semantic = vec!["d", "c", "a"];
        let fused = reciprocal_rank_fusion(&[text, semantic], RRF_K);
        // a: 1/61 + 1/63, c: 1/63 + 1/62, then d (1/61) before b (1/62)
        assert_eq!(order(&fused), ["a", "c", "d", "b"]);
        assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-12);
        assert_eq!(fused[0].ranks, [Some(1), Some(3)]);
        assert_eq!(fused[2].ranks, [None, Some(1)]);
        assert_eq!(fused[3].ranks, [Some(2), None]);
    }

    #[test]
    fn ties_go_to_the_better_single_rank_then_the_id() {
        // x holds ranks 1 and 4, y ranks 4 and 1: the same score, the same best rank
        let fused = reciprocal_rank_fusion(&[vec!["x", "p", "q", "y"], vec!["y", "r", "s", "x"]], RRF_K);
        assert_eq!(&order(&fused)[..2], ["x", "y"], "tied: by id");
        let one = reciprocal_rank_fusion(&[vec!["b", "a"], vec!["a", "b"]], RRF_K);
        assert_eq!(order(&one), ["a", "b"]);
        assert_eq!(one[0].score, one[1].score);
    }

    #[test]
    fn a_repeat_counts_once_and_empty_rankings_fuse_to_nothing() {
        let fused = reciprocal_rank_fusion(&[vec!["a", "a", "b"]], RRF_K);
        assert_eq!(order(&fused), ["a", "b"]);
        assert_eq!(fused[0].ranks, [Some(1)]);
        assert_eq!(fused[1].ranks, [Some(3)]);
        let nothing: Vec<Vec<&str>> = vec![vec![], vec![]];
        assert!(reciprocal_rank_fusion(&nothing, RRF_K).is_empty());
        // one ranking alone keeps its order
        assert_eq!(order(&reciprocal_rank_fusion(&[vec!["c", "a", "b"]], RRF_K)), ["c", "a", "b"]);
    }

    proptest! {
        #[test]
        fn fusion_holds_the_union_once_each_best_first(
            a in prop::collection::vec(0u8..30, 0..20),
            b in prop::collection::vec(0u8..30, 0..20),
        ) {
            let a: Vec<String> = a.iter().map(|n| format!("i{n}")).collect();
            let b: Vec<String> = b.iter().map(|n| format!("i{n}")).collect();
            let fused = reciprocal_rank_fusion(&[a.clone(), b.clone()], RRF_K);
            let mut union: Vec<&String> = a.iter().chain(&b).collect();
            union.sort();
            union.dedup();
            let mut got: Vec<&String> = fused.iter().map(|f| &f.id).collect();
            got.sort();
            prop_assert_eq!(got, union);
            prop_assert!(fused.windows(2).all(|w| w[0].score >= w[1].score));
            // an item both hold scores above what a single ranking can give past its rank
            for f in &fused {
                let expected: f64 = f.ranks.iter().flatten().map(|r| 1.0 / (RRF_K + *r as f64)).sum();
                prop_assert!((f.score - expected).abs() < 1e-12);
            }
        }
    }
}
