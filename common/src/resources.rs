//! Resource sets: `CPU` and any custom names, with fractional amounts.

use rkyv::{Archive, Deserialize, Serialize};

/// Name of the CPU resource.
pub const CPU: &str = "CPU";

/// An amount of named resources, e.g. `{CPU: 1, gpu: 0.5}`. Amounts are kept in 1/10000 units so
/// that sums and differences are exact.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// (name, amount in 1/10000 units), sorted by name, no zero amounts.
    entries: Vec<(String, u64)>,
}

const UNIT: f64 = 10_000.0;

impl Resources {
    /// Nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` CPUs.
    pub fn cpus(n: f64) -> Self {
        let mut r = Self::new();
        r.set(CPU, n);
        r
    }

    /// Sets `name` to `amount` (negative amounts count as zero).
    pub fn set(&mut self, name: &str, amount: f64) {
        let units = (amount.max(0.0) * UNIT).round() as u64;
        match self.entries.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if units == 0 => {
                self.entries.remove(i);
            }
            Ok(i) => self.entries[i].1 = units,
            Err(_) if units == 0 => {}
            Err(i) => self.entries.insert(i, (name.to_owned(), units)),
        }
    }

    /// The amount of `name`.
    pub fn get(&self, name: &str) -> f64 {
        self.units(name) as f64 / UNIT
    }

    fn units(&self, name: &str) -> u64 {
        self.entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(0, |i| self.entries[i].1)
    }

    /// Whether every amount in `need` is available here.
    pub fn contains(&self, need: &Resources) -> bool {
        need.entries.iter().all(|(n, u)| self.units(n) >= *u)
    }

    /// Takes `need` away (call only when [`contains`](Self::contains) holds).
    pub fn subtract(&mut self, need: &Resources) {
        for (n, u) in &need.entries {
            let have = self.units(n);
            self.set(n, (have.saturating_sub(*u)) as f64 / UNIT);
        }
    }

    /// Adds `more`.
    pub fn add(&mut self, more: &Resources) {
        for (n, u) in &more.entries {
            let have = self.units(n);
            self.set(n, (have + u) as f64 / UNIT);
        }
    }

    /// (name, amount) pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries
            .iter()
            .map(|(n, u)| (n.as_str(), *u as f64 / UNIT))
    }

    /// Whether nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (n, a)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}: {a}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_exact() {
        let mut total = Resources::cpus(2.0);
        total.set("gpu", 1.0);
        let mut need = Resources::cpus(0.1);
        need.set("gpu", 0.5);
        for _ in 0..2 {
            assert!(total.contains(&need));
            total.subtract(&need);
        }
        assert!(!total.contains(&need));
        assert_eq!(total.get("gpu"), 0.0);
        assert_eq!(total.get(CPU), 1.8);
        total.add(&need);
        assert_eq!(total.get("gpu"), 0.5);
        assert_eq!(total.to_string(), "{CPU: 1.9, gpu: 0.5}");
    }
}
