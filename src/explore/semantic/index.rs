//! [`VectorIndex`]: every item's embedding in memory, L2-normalised, for exact
//! nearest-neighbour search by dot product (cosine similarity).
//!
//! The vectors live in one contiguous `Vec<f32>`, row after row, so a search is one
//! linear pass over memory that the compiler vectorises; the `k` best rows are
//! kept in a bounded heap. An exact scan is simple and fast enough for the
//! catalogue's size (docs/BENCHMARKS.md: 46k × 384 dimensions, about 70 MB,
//! a few milliseconds a query); an approximate index would pay off only far past it.
//!
//! Removing a row moves the last row into its place, so rows stay contiguous and a
//! removal costs one row's copy.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Why a vector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The vector's length is not the index's dimension.
    #[error("the vector has {got} dimensions; the index holds vectors of {dim}")]
    Dimension { dim: usize, got: usize },
    /// All zeros, or a NaN or infinite component: it has no direction.
    #[error("the vector is zero or has a component that is not finite")]
    Degenerate,
}

/// A search result: an item and its cosine similarity to the query (-1 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    pub id: String,
    pub score: f32,
}

/// Normalised vectors by item id.
#[derive(Debug, Clone, Default)]
pub struct VectorIndex {
    /// Fixed by the first vector (0 until then).
    dim: usize,
    /// The id of each row.
    ids: Vec<String>,
    /// The row of each id.
    rows: HashMap<String, usize>,
    /// `ids.len() * dim` components.
    vectors: Vec<f32>,
}

/// `vector` scaled to length 1; `None` when it has no direction.
pub fn normalise(vector: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(vector, vector).sqrt();
    if !norm.is_finite() || norm <= f32::MIN_POSITIVE {
        return None;
    }
    let scaled: Vec<f32> = vector.iter().map(|x| x / norm).collect();
    scaled.iter().all(|x| x.is_finite()).then_some(scaled)
}

/// The dot product, accumulated in 8 lanes so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// A row in the top-k heap, ordered worst first (lower score, then greater id),
/// so the heap's top is the row to drop.
struct Candidate<'a> {
    score: f32,
    id: &'a str,
}

impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // reversed: the "greatest" candidate is the worst
        other.score.total_cmp(&self.score).then_with(|| self.id.cmp(other.id))
    }
}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate<'_> {}

impl VectorIndex {
    /// An empty index; the first vector fixes its dimension.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dimension of its vectors (0 before the first).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` has a vector.
    pub fn contains(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    /// The (normalised) vector of `id`.
    pub fn get(&self, id: &str) -> Option<&[f32]> {
        let row = *self.rows.get(id)?;
        self.vectors.get(row * self.dim..(row + 1) * self.dim)
    }

    /// Bytes held by the vectors (what dominates its memory).
    pub fn vector_bytes(&self) -> usize {
        self.vectors.len() * std::mem::size_of::<f32>()
    }

    /// Sets the vector of `id` (normalised), replacing any it had.
    pub fn upsert(&mut self, id: &str, vector: &[f32]) -> Result<(), IndexError> {
        if self.dim == 0 && self.is_empty() {
            if vector.is_empty() {
                return Err(IndexError::Dimension { dim: 0, got: 0 });
            }
            self.dim = vector.len();
        }
        if vector.len() != self.dim {
            return Err(IndexError::Dimension { dim: self.dim, got: vector.len() });
        }
        let unit = normalise(vector).ok_or(IndexError::Degenerate)?;
        match self.rows.get(id) {
            Some(&row) => self.vectors[row * self.dim..(row + 1) * self.dim].copy_from_slice(&unit),
            None => {
                self.rows.insert(id.to_owned(), self.ids.len());
                self.ids.push(id.to_owned());
                self.vectors.extend_from_slice(&unit);
            }
        }
        Ok(())
    }

    /// Drops the vector of `id`; false when it had none.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.rows.remove(id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if row != last {
            let (dim, from) = (self.dim, last * self.dim);
            self.vectors.copy_within(from..from + dim, row * dim);
            self.ids.swap(row, last);
            self.rows.insert(self.ids[row].clone(), row);
        }
        self.ids.truncate(last);
        self.vectors.truncate(last * self.dim);
        true
    }

    /// The `k` vectors most similar to `query` (which need not be normalised),
    /// best first (equal scores by id), leaving out `exclude`.
    pub fn top_k(
        &self,
        query: &[f32],
        k: usize,
        exclude: Option<&str>,
    ) -> Result<Vec<Neighbour>, IndexError> {
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        if query.len() != self.dim {
            return Err(IndexError::Dimension { dim: self.dim, got: query.len() });
        }
        let query = normalise(query).ok_or(IndexError::Degenerate)?;
        let skip = exclude.and_then(|id| self.rows.get(id)).copied();
        let mut heap: BinaryHeap<Candidate<'_>> = BinaryHeap::with_capacity(k + 1);
        for (row, vector) in self.vectors.chunks_exact(self.dim).enumerate() {
            if Some(row) == skip {
                continue;
            }
            let score = dot(&query, vector);
            let candidate = Candidate { score, id: &self.ids[row] };
            if heap.len() < k {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                heap.pop();
                heap.push(candidate);
            }
        }
        Ok(heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| Neighbour { id: c.id.to_owned(), score: c.score })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(found: &[Neighbour]) -> Vec<&str> {
        found.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn the_nearest_come_first_and_the_item_itself_can_be_left_out() {
        let mut index = VectorIndex::new();
        index.upsert("x", &[1.0, 0.0, 0.0]).unwrap();
        index.upsert("near-x", &[0.9, 0.1, 0.0]).unwrap();
        index.upsert("y", &[0.0, 2.0, 0.0]).unwrap();
        index.upsert("minus-x", &[-1.0, 0.0, 0.0]).unwrap();
        assert_eq!(index.dim(), 3);
        let found = index.top_k(&[5.0, 0.0, 0.0], 3, None).unwrap();
        assert_eq!(ids(&found), ["x", "near-x", "y"]);
        assert!((found[0].score - 1.0).abs() < 1e-6, "cosine of parallel vectors");
        assert!(found[2].score.abs() < 1e-6, "orthogonal");
        let related = index.top_k(index.get("x").unwrap(), 10, Some("x")).unwrap();
        assert_eq!(ids(&related), ["near-x", "y", "minus-x"]);
        assert!((related[2].score + 1.0).abs() < 1e-6);
    }

    #[test]
    fn upsert_replaces_and_remove_keeps_the_rest_findable() {
        let mut index = VectorIndex::new();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut v = vec![0.0; 4];
            v[i] = 1.0;
            index.upsert(id, &v).unwrap();
        }
        index.upsert("a", &[0.0, 0.0, 0.0, 3.0]).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.get("a").unwrap(), [0.0, 0.0, 0.0, 1.0], "replaced, normalised");
        // removing a middle row moves the last one into its place
        assert!(index.remove("b"));
        assert!(!index.remove("b"));
        assert_eq!(index.len(), 3);
        assert_eq!(index.vector_bytes(), 3 * 4 * 4);
        assert_eq!(index.get("d").unwrap(), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(index.get("c").unwrap(), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(ids(&index.top_k(&[0.0, 0.0, 1.0, 0.0], 1, None).unwrap()), ["c"]);
        let tied = index.top_k(&[0.0, 0.0, 0.0, 1.0], 2, None).unwrap();
        assert_eq!(ids(&tied), ["a", "d"], "equal scores by id");
        for id in ["a", "c", "d"] {
            assert!(index.remove(id));
        }
        assert!(index.is_empty());
        assert_eq!(index.top_k(&[1.0, 0.0, 0.0, 0.0], 3, None).unwrap(), []);
    }

    #[test]
    fn a_wrong_dimension_or_a_zero_vector_is_refused() {
        let mut index = VectorIndex::new();
        assert_eq!(index.upsert("a", &[]), Err(IndexError::Dimension { dim: 0, got: 0 }));
        index.upsert("a", &[1.0, 2.0]).unwrap();
        assert_eq!(index.upsert("b", &[1.0]), Err(IndexError::Dimension { dim: 2, got: 1 }));
        assert_eq!(index.upsert("b", &[0.0, 0.0]), Err(IndexError::Degenerate));
        assert_eq!(index.upsert("b", &[f32::NAN, 1.0]), Err(IndexError::Degenerate));
        assert_eq!(index.top_k(&[1.0, 2.0, 3.0], 1, None), Err(IndexError::Dimension { dim: 2, got: 3 }));
        assert_eq!(index.top_k(&[0.0, 0.0], 1, None), Err(IndexError::Degenerate));
        assert_eq!(index.len(), 1);
    }

    fn brute_force(vectors: &[(String, Vec<f32>)], query: &[f32], k: usize, exclude: &str) -> Vec<String> {
        let unit = |v: &[f32]| normalise(v).unwrap();
        let q = unit(query);
        let mut scored: Vec<(f32, &String)> =
            vectors.iter().filter(|(id, _)| id != exclude).map(|(id, v)| (dot(&q, &unit(v)), id)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().take(k).map(|(_, id)| id.clone()).collect()
    }

    proptest! {
        #[test]
        fn top_k_is_the_best_k_of_an_exhaustive_sort(
            vectors in prop::collection::vec(prop::collection::vec(0.01f32..1.0, 11), 1..60),
            query in prop::collection::vec(-1.0f32..1.0, 11).prop_filter("has a direction", |q| normalise(q).is_some()),
            k in 1usize..12,
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut kept: Vec<(String, Vec<f32>)> =
                vectors.into_iter().enumerate().map(|(i, v)| (format!("item-{i:03}"), v)).collect();
            let mut index = VectorIndex::new();
            for (id, v) in &kept {
                index.upsert(id, v).unwrap();
            }
            for pick in removed {
                if kept.is_empty() {
                    break;
                }
                let (id, _) = kept.remove(pick.index(kept.len()));
                prop_assert!(index.remove(&id));
            }
            prop_assert_eq!(index.len(), kept.len());
            let exclude = kept.first().map(|(id, _)| id.clone()).unwrap_or_default();
            let found = index.top_k(&query, k, Some(&exclude)).unwrap();
            let expected = brute_force(&kept, &query, k, &exclude);
            // equal within float error: compare scores, not only the order of near-ties
            prop_assert_eq!(found.len(), expected.len());
            for (got, want) in found.iter().zip(&expected) {
                let want_score = dot(&normalise(&query).unwrap(), index.get(want).unwrap());
                prop_assert!((got.score - want_score).abs() < 1e-5, "{} vs {}", got.id, want);
            }
            prop_assert!(found.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}
