//! Hash maps and sets for state keyed by what clients choose (channel, table and client
//! names): ahash is several times faster than SipHash on these short keys and still
//! keyed randomly, so clients cannot flood one bucket with chosen names.

/// Hash map with a randomly keyed ahash.
pub type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
/// Hash set counterpart of [`Map`].
pub type Set<T> = std::collections::HashSet<T, ahash::RandomState>;
