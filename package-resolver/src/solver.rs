//! Minimal dependency closure over a [`PackageIndex`] (Debian Policy §7).
//!
//! # What is followed
//! `Pre-Depends` and `Depends` only, with alternatives (`|`), version relations and virtual
//! packages (`Provides`). Nothing is added for being `Essential` or `Priority:
//! required/important`, and `Recommends`/`Suggests` are never followed: an appliance gets
//! exactly what its roots need.
//!
//! # Candidates
//! Each name has one candidate: its highest version in the index (no pinning; a suite
//! snapshot normally has one version per package). A relation `foo (op v)` is satisfied by
//! - the candidate of `foo` when its version matches;
//! - a package that `Provides: foo (= w)` with `w` matching (a versioned provide);
//! - for an unversioned relation, any package that provides `foo` (an unversioned provide
//!   never satisfies a versioned relation, Policy §7.5).
//!
//! Multi-Arch on a single-architecture system (dpkg's `deparchsatisfied`): a
//! `Multi-Arch: foreign` package satisfies any qualifier; `foo:any` is otherwise satisfied
//! only by `Multi-Arch: allowed`; `foo:native` and `foo:<arch>` by packages of that
//! architecture or `all`.
//!
//! # Choosing among alternatives and providers
//! Candidates of a clause are listed in order: for each alternative, the real package,
//! then the providers of that name sorted by name. The solver tries them in this order:
//! 1. candidates named in `prefer` (in list order);
//! 2. if the clause is already satisfied by the set, nothing is added at all;
//! 3. the *default*: the first listed candidate, or, when that one would pull in further
//!    packages, the first candidate whose own dependencies are already satisfied by the
//!    set (it adds only itself);
//!    - unless another candidate is *much smaller* than the default: its additional
//!      transitive installed size (a greedy closure estimate over the current set) is less
//!      than half of the default's and at least 1 MiB smaller; then the smallest such
//!      candidate (ties: list order, so providers by name) is tried before the default;
//! 4. the remaining candidates in list order (only reached by backtracking).
//!
//! # Conflicts and backtracking
//! `Conflicts` and `Breaks` are checked both ways between a new package and every member
//! (including provided virtual names; a package never conflicts with itself). A candidate
//! that conflicts is skipped; when a later clause cannot be satisfied, the search backtracks
//! to the most recent choice with untried candidates, discarding everything the abandoned
//! branch pulled in (each branch works on its own copy of the set).
//!
//! # Minimality
//! After the search, members that nothing needs are removed: a non-root member stays only
//! if it is reachable from a root and is the only member satisfying some clause of another
//! member. Reasons for [`Resolution::why`] are then recomputed breadth-first from the roots,
//! so `why` shows a shortest chain.
//!
//! # Dropped relations
//! A clause any of whose alternatives names an entry of `exclude` or `drop_with_reason`
//! is dropped (not followed) and reported in [`Resolution::dropped`]; `exclude` entries are
//! also reported as warnings.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::rc::Rc;

use crate::packages::{MultiArch, Package, PackageId, PackageIndex};
use crate::relation::{self, Clause, Relation, RelationError};
use crate::version::Version;

/// Maximum number of search nodes before giving up.
const STEP_LIMIT: usize = 20_000;
/// Maximum number of packages the size estimate walks per candidate.
const COST_WALK_LIMIT: usize = 4_000;
/// "Much smaller" needs at least this difference (KiB).
const MUCH_SMALLER_KIB: u64 = 1024;

/// What to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SolveRequest {
    /// Roots: package or virtual names, optionally with a constraint (`nginx (>= 1.26)`).
    pub install: Vec<String>,
    /// Names to choose first among alternatives and providers.
    pub prefer: Vec<String>,
    /// Names whose relations are dropped (reported as warnings).
    pub exclude: Vec<String>,
    /// Names whose relations are dropped for a documented reason (package or virtual name,
    /// reason), e.g. `("linux-initramfs-tool", "jeos builds its own initramfs")`.
    pub drop_with_reason: Vec<(String, String)>,
    /// Target architecture, e.g. `amd64` (must match the index).
    pub arch: String,
}

/// Why the solver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolveError {
    /// A root request does not parse.
    #[error("invalid package request `{request}`")]
    InvalidRequest {
        /// The request as given.
        request: String,
        /// Syntax error.
        #[source]
        source: RelationError,
    },
    /// A root names neither a package nor a virtual package of the index.
    #[error("unknown package `{name}`")]
    UnknownPackage {
        /// The name requested.
        name: String,
        /// Up to 5 close names (prefix, substring, edit distance).
        suggestions: Vec<String>,
    },
    /// No candidate can satisfy a relation.
    #[error(
        "cannot satisfy `{relation}` (needed by {}): {reason}",
        chain_text(chain)
    )]
    Unsatisfiable {
        /// Root -> ... -> the package that has the relation (empty for a root request).
        chain: Vec<String>,
        /// The clause as written.
        relation: String,
        /// Why no candidate fits.
        reason: String,
    },
    /// Every candidate for a relation conflicts with a package already chosen.
    #[error(
        "`{package}` (for `{relation}`, needed by {}) conflicts with `{other}` (needed by {}): {conflict}",
        chain_text(chain),
        chain_text(other_chain)
    )]
    Conflict {
        /// Root -> ... -> the package that has the relation.
        chain: Vec<String>,
        /// The clause being satisfied.
        relation: String,
        /// The candidate that was rejected.
        package: String,
        /// The member it conflicts with.
        other: String,
        /// Root -> ... -> `other`.
        other_chain: Vec<String>,
        /// The `Conflicts`/`Breaks` relation involved, e.g. `Conflicts: foo (<< 2)`.
        conflict: String,
    },
    /// The request's architecture is not the index's.
    #[error("request is for `{requested}` but the package index is for `{index}`")]
    ArchitectureMismatch {
        /// `SolveRequest::arch`.
        requested: String,
        /// `PackageIndex::arch`.
        index: String,
    },
    /// The backtracking search exceeded its step limit.
    #[error("dependency search gave up after {steps} steps")]
    TooComplex {
        /// Steps taken.
        steps: usize,
    },
}

fn chain_text(chain: &[String]) -> String {
    if chain.is_empty() {
        "the request".to_owned()
    } else {
        chain.join(" -> ")
    }
}

/// A warning produced while solving.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum SolveWarning {
    /// A relation was dropped because of `exclude`.
    #[error("dropped `{relation}` of `{package}` (excluded by the recipe)")]
    Excluded {
        /// Package that has the relation.
        package: String,
        /// The clause.
        relation: String,
    },
    /// A package's relationship fields do not parse; it was not used.
    #[error("ignored `{package}` {version}: invalid relationship field: {error}")]
    InvalidRelations {
        /// Package name.
        package: String,
        /// Its version.
        version: String,
        /// The parse error text.
        error: String,
    },
}

/// A relation that was not followed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DroppedRelation {
    /// Package that has the relation.
    pub package: String,
    /// The clause as written (normalised).
    pub relation: String,
    /// Why (the `drop_with_reason` text, or `excluded by the recipe`).
    pub reason: String,
}

/// Why a package is in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Requested directly.
    Root {
        /// The request text (`nginx`, `nginx (>= 1.26)`, a virtual name...).
        request: String,
    },
    /// Pulled in by `parent`'s relation.
    Dependency {
        /// Package that needs it.
        parent: String,
        /// The parent's clause that it satisfies.
        relation: String,
    },
}

/// One member of the resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Architecture (`amd64` or `all`).
    pub arch: String,
    /// Pool path relative to the mirror root.
    pub filename: String,
    /// `.deb` size in bytes.
    pub size: u64,
    /// `Installed-Size` in KiB.
    pub installed_size_kib: u64,
    /// SHA-256 of the `.deb` (hex).
    pub sha256: String,
    /// `Multi-Arch`.
    pub multi_arch: MultiArch,
    /// Source package name.
    pub source: String,
    /// Which `Packages` text of the index it came from ([`crate::packages::Package::source_index`]).
    pub source_index: usize,
    /// Why it is here.
    pub reason: Reason,
}

/// One step of a [`Resolution::why`] chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Package at this step.
    pub package: String,
    /// The request text (first step) or the previous package's relation that pulled it.
    pub relation: String,
}

/// Result of [`solve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Architecture solved for.
    pub arch: String,
    /// Members, sorted by name.
    pub packages: Vec<ResolvedPackage>,
    /// Relations not followed (only those of members), sorted.
    pub dropped: Vec<DroppedRelation>,
    /// Warnings, sorted.
    pub warnings: Vec<SolveWarning>,
}

impl Resolution {
    /// The member named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ResolvedPackage> {
        self.packages
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.packages[i])
    }

    /// Chain from a root to `name`, each step with the relation that pulled it.
    #[must_use]
    pub fn why(&self, name: &str) -> Option<Vec<Step>> {
        let mut steps = Vec::new();
        let mut current = self.get(name)?;
        loop {
            match &current.reason {
                Reason::Root { request } => {
                    steps.push(Step {
                        package: current.name.clone(),
                        relation: request.clone(),
                    });
                    break;
                }
                Reason::Dependency { parent, relation } => {
                    steps.push(Step {
                        package: current.name.clone(),
                        relation: relation.clone(),
                    });
                    current = self.get(parent)?;
                    if steps.len() > self.packages.len() {
                        return None; // cycle: cannot happen for solver output
                    }
                }
            }
        }
        steps.reverse();
        Some(steps)
    }

    /// Sum of `Installed-Size` (KiB).
    #[must_use]
    pub fn installed_size_kib(&self) -> u64 {
        self.packages.iter().map(|p| p.installed_size_kib).sum()
    }

    /// Sum of `.deb` sizes (bytes).
    #[must_use]
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }
}

/// Why [`verify_closure`] rejected a resolution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClosureViolation {
    /// A member is not in the index with that version.
    #[error("`{name}` {version} is not in the package index")]
    NotInIndex {
        /// Name.
        name: String,
        /// Version.
        version: String,
    },
    /// Two members share a name.
    #[error("`{name}` appears twice")]
    Duplicate {
        /// Name.
        name: String,
    },
    /// A dependency of a member is not satisfied inside the set.
    #[error("`{relation}` of `{package}` is not satisfied inside the set")]
    Unsatisfied {
        /// Member.
        package: String,
        /// Its clause.
        relation: String,
    },
    /// Two members conflict.
    #[error("`{package}` and `{other}` conflict ({conflict})")]
    Conflict {
        /// Member with the relation.
        package: String,
        /// Member it hits.
        other: String,
        /// The relation.
        conflict: String,
    },
    /// A non-root member that nothing needs.
    #[error("`{package}` is not needed by any other member")]
    NotNeeded {
        /// Member.
        package: String,
    },
    /// A member's relationship fields do not parse.
    #[error("`{package}` has an invalid relationship field")]
    InvalidRelations {
        /// Member.
        package: String,
        /// Parse error.
        #[source]
        source: RelationError,
    },
}

// ---------------------------------------------------------------------------------------
// Relation semantics shared by the solver and verify_closure.

/// dpkg `deparchsatisfied` for a single-architecture system.
fn arch_satisfies(relation: &Relation<'_>, package: Package<'_>, native: &str) -> bool {
    if package.multi_arch() == MultiArch::Foreign {
        return true;
    }
    match relation.arch_qualifier {
        None | Some("native") => true,
        Some("any") => package.multi_arch() == MultiArch::Allowed,
        Some(arch) => {
            let package_arch = match package.architecture() {
                "all" => native,
                other => other,
            };
            arch == package_arch
        }
    }
}

/// Whether `package` satisfies a dependency `relation`.
fn satisfies(relation: &Relation<'_>, package: Package<'_>, native: &str) -> bool {
    if !arch_satisfies(relation, package, native) {
        return false;
    }
    if package.name() == relation.name && relation.version_matches(package.version()) {
        return true;
    }
    provides_match(relation, package)
}

/// Whether `package` provides `relation.name` in a way that satisfies its constraint.
fn provides_match(relation: &Relation<'_>, package: Package<'_>) -> bool {
    package.provides().any(|(name, version)| {
        name == relation.name
            && match (&relation.constraint, version) {
                (None, _) => true,
                (Some(c), Some(v)) => c.matches(v),
                (Some(_), None) => false,
            }
    })
}

/// Whether a `Conflicts`/`Breaks` `relation` of some package hits `other`.
fn conflict_hits(relation: &Relation<'_>, other: Package<'_>) -> bool {
    (other.name() == relation.name && relation.version_matches(other.version()))
        || provides_match(relation, other)
}

/// The first `Conflicts`/`Breaks` relation between `a` and `b`, either direction.
fn conflict_between<'i>(
    a: Package<'i>,
    a_conflicts: &[Clause<'i>],
    b: Package<'i>,
    b_conflicts: &[Clause<'i>],
) -> Option<(Package<'i>, Package<'i>, String)> {
    if a.id() == b.id() {
        return None;
    }
    for (x, x_conflicts, y) in [(a, a_conflicts, b), (b, b_conflicts, a)] {
        for clause in x_conflicts {
            for relation in &clause.alternatives {
                if conflict_hits(relation, y) {
                    let field = if relation::parse_relations(x.conflicts_raw(), "")
                        .is_ok_and(|c| c.iter().any(|c| c.alternatives.contains(relation)))
                    {
                        "Conflicts"
                    } else {
                        "Breaks"
                    };
                    return Some((x, y, format!("`{}` {field}: {relation}", x.name())));
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Search state.

/// Members and the virtual names they provide.
#[derive(Clone, Default)]
struct Set<'i> {
    by_name: BTreeMap<&'i str, PackageId>,
    provided: HashMap<&'i str, Vec<PackageId>>,
}

impl<'i> Set<'i> {
    fn insert(&mut self, package: Package<'i>) {
        self.by_name.insert(package.name(), package.id());
        for (name, _) in package.provides() {
            self.provided.entry(name).or_default().push(package.id());
        }
    }

    fn contains(&self, package: Package<'_>) -> bool {
        self.by_name.get(package.name()) == Some(&package.id())
    }

    /// Members satisfying `relation`.
    fn satisfiers<'s>(
        &'s self,
        index: &'i PackageIndex,
        relation: &'s Relation<'i>,
    ) -> impl Iterator<Item = PackageId> + 's {
        let native = index.arch();
        let direct = self.by_name.get(relation.name).copied();
        let provided = self
            .provided
            .get(relation.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        direct
            .into_iter()
            .chain(provided.iter().copied())
            .filter(move |&id| satisfies(relation, index.get(id), native))
    }

    fn satisfies_clause(&self, index: &'i PackageIndex, clause: &Clause<'i>) -> bool {
        clause
            .alternatives
            .iter()
            .any(|r| self.satisfiers(index, r).next().is_some())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Root(usize),
    Dependency(PackageId, usize),
}

#[derive(Clone)]
struct State<'i> {
    set: Set<'i>,
    /// Who pulled each member in: (parent or None for a root, clause text).
    parent: HashMap<PackageId, (Option<PackageId>, String)>,
    /// Members in insertion order (deterministic conflict checks).
    order: Vec<PackageId>,
    queue: VecDeque<Pending>,
    dropped: Vec<(PackageId, String, String, bool)>,
}

struct Solver<'i> {
    index: &'i PackageIndex,
    roots: Vec<(String, Clause<'i>)>,
    prefer: HashSet<&'i str>,
    /// Dropped names: reason and whether it comes from `exclude`.
    drops: HashMap<&'i str, (&'i str, bool)>,
    dependencies: RefCell<HashMap<PackageId, Option<Rc<Vec<Clause<'i>>>>>>,
    conflicts: RefCell<HashMap<PackageId, Rc<Vec<Clause<'i>>>>>,
    warnings: RefCell<BTreeSet<SolveWarning>>,
    steps: RefCell<usize>,
}

const EXCLUDED_REASON: &str = "excluded by the recipe";

impl<'i> Solver<'i> {
    /// Parsed dependencies, or None (with a warning) when they don't parse.
    fn dependencies(&self, id: PackageId) -> Option<Rc<Vec<Clause<'i>>>> {
        if let Some(cached) = self.dependencies.borrow().get(&id) {
            return cached.clone();
        }
        let package = self.index.get(id);
        let parsed = match package.dependencies() {
            Ok(clauses) => Some(Rc::new(clauses)),
            Err(e) => {
                self.warn_invalid(package, &e);
                None
            }
        };
        self.dependencies.borrow_mut().insert(id, parsed.clone());
        parsed
    }

    fn conflicts(&self, id: PackageId) -> Rc<Vec<Clause<'i>>> {
        if let Some(cached) = self.conflicts.borrow().get(&id) {
            return cached.clone();
        }
        let package = self.index.get(id);
        let parsed = Rc::new(package.conflicts().unwrap_or_else(|e| {
            // Unparseable conflicts: the package is rejected through `dependencies` only
            // if those fail too; treat the conflicts as absent but say so.
            self.warn_invalid(package, &e);
            Vec::new()
        }));
        self.conflicts.borrow_mut().insert(id, parsed.clone());
        parsed
    }

    fn warn_invalid(&self, package: Package<'_>, error: &RelationError) {
        self.warnings
            .borrow_mut()
            .insert(SolveWarning::InvalidRelations {
                package: package.name().to_owned(),
                version: package.version().to_string(),
                error: error.to_string(),
            });
    }

    fn clause(&self, pending: Pending) -> (Option<PackageId>, Clause<'i>) {
        match pending {
            Pending::Root(i) => (None, self.roots[i].1.clone()),
            Pending::Dependency(id, i) => {
                let deps = self
                    .dependencies(id)
                    .expect("only parsed packages are queued");
                (Some(id), deps[i].clone())
            }
        }
    }

    /// Drop reason when any alternative names a dropped name.
    fn drop_reason(&self, clause: &Clause<'_>) -> Option<(&'i str, bool)> {
        clause
            .alternatives
            .iter()
            .find_map(|r| self.drops.get(r.name).copied())
    }

    /// Candidates in list order (see module docs), without conflict filtering.
    fn listed_candidates(&self, set: &Set<'i>, clause: &Clause<'i>) -> Vec<PackageId> {
        let native = self.index.arch();
        let mut out: Vec<PackageId> = Vec::new();
        for relation in &clause.alternatives {
            let real = self.index.candidate(relation.name);
            let providers = self.index.providers(relation.name).map(|(p, _)| p);
            for package in real.into_iter().chain(providers) {
                // Providers are listed per version; only each name's candidate counts.
                let is_candidate = self
                    .index
                    .candidate(package.name())
                    .is_some_and(|c| c.id() == package.id());
                if !is_candidate
                    || out.contains(&package.id())
                    || !satisfies(relation, package, native)
                    || set.by_name.contains_key(package.name())
                    || self.dependencies(package.id()).is_none()
                {
                    continue;
                }
                out.push(package.id());
            }
        }
        out
    }

    /// Greedy estimate of what adding `id` costs on top of `set`: (KiB, new packages).
    fn extra_cost(&self, set: &Set<'i>, id: PackageId) -> (u64, usize) {
        let mut sim = set.clone();
        let mut queue: VecDeque<PackageId> = VecDeque::from([id]);
        let package = self.index.get(id);
        sim.insert(package);
        let mut kib = package.installed_size_kib();
        let mut count = 1;
        while let Some(current) = queue.pop_front() {
            let Some(deps) = self.dependencies(current) else {
                continue;
            };
            for clause in deps.iter() {
                if self.drop_reason(clause).is_some() || sim.satisfies_clause(self.index, clause) {
                    continue;
                }
                if let Some(&first) = self.listed_candidates(&sim, clause).first() {
                    let p = self.index.get(first);
                    sim.insert(p);
                    kib += p.installed_size_kib();
                    count += 1;
                    queue.push_back(first);
                    if count >= COST_WALK_LIMIT {
                        return (kib, count);
                    }
                }
            }
        }
        (kib, count)
    }

    /// Candidates in the order the search tries them.
    fn ordered_candidates(&self, set: &Set<'i>, clause: &Clause<'i>) -> Vec<PackageId> {
        let listed = self.listed_candidates(set, clause);
        if listed.len() <= 1 {
            return listed;
        }
        let mut order: Vec<PackageId> = Vec::with_capacity(listed.len());
        let push = |order: &mut Vec<PackageId>, id: PackageId| {
            if !order.contains(&id) {
                order.push(id);
            }
        };
        for &id in &listed {
            if self.prefer.contains(self.index.get(id).name()) {
                push(&mut order, id);
            }
        }
        let costs: Vec<(u64, usize)> = listed.iter().map(|&id| self.extra_cost(set, id)).collect();
        // Default: the first listed, or, when it pulls in more packages, the first
        // candidate that adds only itself (its closure is already satisfied).
        let default = if costs[0].1 > 1 {
            costs.iter().position(|&(_, count)| count == 1).unwrap_or(0)
        } else {
            0
        };
        let base = costs[default].0;
        let mut best: Option<usize> = None;
        for (i, &(kib, _)) in costs.iter().enumerate() {
            let much_smaller = kib.saturating_mul(2) < base && base - kib >= MUCH_SMALLER_KIB;
            if i != default && much_smaller && best.is_none_or(|b| kib < costs[b].0) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            push(&mut order, listed[b]);
        }
        push(&mut order, listed[default]);
        for &id in &listed {
            push(&mut order, id);
        }
        order
    }

    fn chain(&self, state: &State<'i>, mut id: Option<PackageId>) -> Vec<String> {
        let mut chain = Vec::new();
        while let Some(current) = id {
            chain.push(self.index.get(current).name().to_owned());
            id = state.parent.get(&current).and_then(|(p, _)| *p);
            if chain.len() > state.order.len() {
                break;
            }
        }
        chain.reverse();
        chain
    }

    fn add(
        &self,
        state: &mut State<'i>,
        id: PackageId,
        parent: Option<PackageId>,
        relation: String,
    ) {
        let package = self.index.get(id);
        state.set.insert(package);
        state.parent.insert(id, (parent, relation));
        state.order.push(id);
        let deps = self
            .dependencies(id)
            .expect("candidates have parsed dependencies");
        for i in 0..deps.len() {
            state.queue.push_back(Pending::Dependency(id, i));
        }
    }

    /// Explains why no candidate exists for `clause`.
    fn unsatisfiable_reason(&self, set: &Set<'i>, clause: &Clause<'i>) -> String {
        let native = self.index.arch();
        let mut reasons = Vec::new();
        for relation in &clause.alternatives {
            let real = self.index.candidate(relation.name);
            let providers: Vec<Package<'_>> = self
                .index
                .providers(relation.name)
                .map(|(p, _)| p)
                .collect();
            let reason = match real {
                None if providers.is_empty() => {
                    format!("no package or provider named `{}`", relation.name)
                }
                Some(p) if set.by_name.contains_key(p.name()) && !set.contains(p) => {
                    format!("another version of `{}` is already chosen", p.name())
                }
                Some(p) if !arch_satisfies(relation, p, native) => format!(
                    "`{}` is `Multi-Arch: {}` and cannot satisfy `{relation}`",
                    p.name(),
                    p.multi_arch()
                ),
                Some(p) if !relation.version_matches(p.version()) && providers.is_empty() => {
                    format!("candidate `{}` is version {}", p.name(), p.version())
                }
                Some(p) if self.dependencies(p.id()).is_none() => {
                    format!("`{}` has an invalid relationship field", p.name())
                }
                _ => format!(
                    "no candidate or provider of `{}` matches `{relation}`",
                    relation.name
                ),
            };
            reasons.push(reason);
        }
        reasons.join("; ")
    }

    #[expect(
        clippy::result_large_err,
        reason = "errors are rare and carry whole chains for the user"
    )]
    fn search(&self, mut state: State<'i>) -> Result<State<'i>, SolveError> {
        while let Some(pending) = state.queue.pop_front() {
            let (parent, clause) = self.clause(pending);
            if let Some((reason, excluded)) = self.drop_reason(&clause) {
                if let Some(p) = parent {
                    state
                        .dropped
                        .push((p, clause.to_string(), reason.to_owned(), excluded));
                }
                if parent.is_some() {
                    continue;
                }
            }
            if state.set.satisfies_clause(self.index, &clause) {
                continue;
            }
            let relation_text = match pending {
                Pending::Root(i) => self.roots[i].0.clone(),
                Pending::Dependency(..) => clause.to_string(),
            };
            let candidates = self.ordered_candidates(&state.set, &clause);
            if candidates.is_empty() {
                return Err(SolveError::Unsatisfiable {
                    chain: self.chain(&state, parent),
                    relation: relation_text,
                    reason: self.unsatisfiable_reason(&state.set, &clause),
                });
            }
            let mut viable = Vec::with_capacity(candidates.len());
            let mut first_conflict = None;
            for id in candidates {
                match self.find_conflict(&state, id) {
                    None => viable.push(id),
                    Some(conflict) => {
                        first_conflict.get_or_insert(conflict);
                    }
                }
            }
            if viable.is_empty() {
                let (package, other, conflict) = first_conflict.expect("non-empty candidates");
                return Err(SolveError::Conflict {
                    chain: self.chain(&state, parent),
                    relation: relation_text,
                    package: self.index.get(package).name().to_owned(),
                    other: self.index.get(other).name().to_owned(),
                    other_chain: self.chain(&state, Some(other)),
                    conflict,
                });
            }
            if viable.len() == 1 {
                self.add(&mut state, viable[0], parent, relation_text);
                continue;
            }
            let mut first_error = None;
            for id in viable {
                {
                    let mut steps = self.steps.borrow_mut();
                    *steps += 1;
                    if *steps > STEP_LIMIT {
                        return Err(SolveError::TooComplex { steps: *steps });
                    }
                }
                let mut branch = state.clone();
                self.add(&mut branch, id, parent, relation_text.clone());
                match self.search(branch) {
                    Ok(done) => return Ok(done),
                    Err(e @ SolveError::TooComplex { .. }) => return Err(e),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            return Err(first_error.expect("at least one viable candidate was tried"));
        }
        Ok(state)
    }

    /// (candidate, member, relation text) of the first conflict of `id` with the set.
    fn find_conflict(
        &self,
        state: &State<'i>,
        id: PackageId,
    ) -> Option<(PackageId, PackageId, String)> {
        let candidate = self.index.get(id);
        let candidate_conflicts = self.conflicts(id);
        for &member_id in &state.order {
            let member = self.index.get(member_id);
            let member_conflicts = self.conflicts(member_id);
            if let Some((_, _, text)) =
                conflict_between(candidate, &candidate_conflicts, member, &member_conflicts)
            {
                return Some((id, member_id, text));
            }
        }
        None
    }
}

/// Clauses of member `id` that must be satisfied (not dropped), for pruning and checks.
fn live_clauses<'i>(
    index: &'i PackageIndex,
    id: PackageId,
    is_dropped: &dyn Fn(&str, &Clause<'_>) -> bool,
) -> Result<Vec<Clause<'i>>, RelationError> {
    let package = index.get(id);
    let clauses = package.dependencies()?;
    Ok(clauses
        .into_iter()
        .filter(|c| !is_dropped(package.name(), c))
        .collect())
}

/// Removes members nothing needs (see module docs) and returns the pruned set.
fn prune(
    index: &PackageIndex,
    members: &BTreeSet<PackageId>,
    roots: &BTreeSet<PackageId>,
    is_dropped: &dyn Fn(&str, &Clause<'_>) -> bool,
) -> BTreeSet<PackageId> {
    let mut members = members.clone();
    let clauses: HashMap<PackageId, Vec<Clause<'_>>> = members
        .iter()
        .map(|&id| (id, live_clauses(index, id, is_dropped).unwrap_or_default()))
        .collect();
    loop {
        let mut set = Set::default();
        for &id in &members {
            set.insert(index.get(id));
        }
        // Reachability from the roots.
        let mut reached: BTreeSet<PackageId> = roots.clone();
        let mut queue: VecDeque<PackageId> = roots.iter().copied().collect();
        // sole[p] = true when p is the only satisfier of some clause of another member.
        let mut sole: HashSet<PackageId> = HashSet::new();
        while let Some(id) = queue.pop_front() {
            for clause in &clauses[&id] {
                let satisfiers: BTreeSet<PackageId> = clause
                    .alternatives
                    .iter()
                    .flat_map(|r| set.satisfiers(index, r).collect::<Vec<_>>())
                    .collect();
                if satisfiers.len() == 1 {
                    sole.extend(satisfiers.iter().filter(|&&s| s != id));
                }
                for s in satisfiers {
                    if reached.insert(s) {
                        queue.push_back(s);
                    }
                }
            }
        }
        if reached.len() < members.len() {
            members = reached;
            continue;
        }
        // Remove one redundant member (highest id first: deterministic), then re-check.
        let redundant = members
            .iter()
            .rev()
            .find(|id| !roots.contains(id) && !sole.contains(id))
            .copied();
        match redundant {
            Some(id) => {
                members.remove(&id);
            }
            None => return members,
        }
    }
}

/// Resolves the minimal closure of `request` over `index`.
///
/// # Errors
/// [`SolveError`] naming the request, the chain and the relation that failed.
#[expect(
    clippy::result_large_err,
    reason = "errors are rare and carry whole chains for the user"
)]
pub fn solve(index: &PackageIndex, request: &SolveRequest) -> Result<Resolution, SolveError> {
    if request.arch != index.arch() {
        return Err(SolveError::ArchitectureMismatch {
            requested: request.arch.clone(),
            index: index.arch().to_owned(),
        });
    }
    let roots = parse_roots(index, request)?;
    let mut drops: HashMap<&str, (&str, bool)> = HashMap::new();
    for (name, reason) in &request.drop_with_reason {
        drops
            .entry(name.as_str())
            .or_insert((reason.as_str(), false));
    }
    for name in &request.exclude {
        drops
            .entry(name.as_str())
            .or_insert((EXCLUDED_REASON, true));
    }
    let solver = Solver {
        index,
        roots,
        prefer: request.prefer.iter().map(String::as_str).collect(),
        drops,
        dependencies: RefCell::default(),
        conflicts: RefCell::default(),
        warnings: RefCell::default(),
        steps: RefCell::new(0),
    };
    let state = State {
        set: Set::default(),
        parent: HashMap::new(),
        order: Vec::new(),
        queue: (0..solver.roots.len()).map(Pending::Root).collect(),
        dropped: Vec::new(),
    };
    let state = solver.search(state)?;

    let is_dropped = |_: &str, clause: &Clause<'_>| solver.drop_reason(clause).is_some();
    let members = minimal_members(&solver, &state, &is_dropped);
    let mut reasons = member_reasons(&solver, &members, &is_dropped);

    let mut packages: Vec<ResolvedPackage> = members
        .iter()
        .map(|&id| {
            let p = index.get(id);
            ResolvedPackage {
                name: p.name().to_owned(),
                version: p.version().clone(),
                arch: p.architecture().to_owned(),
                filename: p.filename().to_owned(),
                size: p.size_bytes(),
                installed_size_kib: p.installed_size_kib(),
                sha256: p.sha256().to_owned(),
                multi_arch: p.multi_arch(),
                source: p.source().to_owned(),
                source_index: p.source_index(),
                reason: reasons.remove(&id).unwrap_or(Reason::Root {
                    request: p.name().to_owned(),
                }),
            }
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));

    let mut warnings = solver.warnings.into_inner();
    let mut dropped = BTreeSet::new();
    for (id, relation, reason, excluded) in state.dropped {
        if !members.contains(&id) {
            continue;
        }
        let package = index.get(id).name().to_owned();
        if excluded {
            warnings.insert(SolveWarning::Excluded {
                package: package.clone(),
                relation: relation.clone(),
            });
        }
        dropped.insert(DroppedRelation {
            package,
            relation,
            reason,
        });
    }
    Ok(Resolution {
        arch: request.arch.clone(),
        packages,
        dropped: dropped.into_iter().collect(),
        warnings: warnings.into_iter().collect(),
    })
}

/// The requests as root clauses; every named package must exist (or be provided).
#[expect(
    clippy::result_large_err,
    reason = "errors are rare and carry whole chains for the user"
)]
fn parse_roots<'i>(
    index: &'i PackageIndex,
    request: &'i SolveRequest,
) -> Result<Vec<(String, Clause<'i>)>, SolveError> {
    let mut roots = Vec::new();
    for text in &request.install {
        let relation =
            relation::parse_relation(text).map_err(|source| SolveError::InvalidRequest {
                request: text.clone(),
                source,
            })?;
        if index.versions(relation.name).next().is_none()
            && index.providers(relation.name).next().is_none()
        {
            return Err(SolveError::UnknownPackage {
                name: relation.name.to_owned(),
                suggestions: suggest(index, relation.name),
            });
        }
        roots.push((
            text.trim().to_owned(),
            Clause {
                alternatives: vec![relation],
            },
        ));
    }
    Ok(roots)
}

/// The found set made minimal: members nothing needs are pruned, keeping for each request
/// the member that satisfies it (the one added for it when there is one).
fn minimal_members(
    solver: &Solver<'_>,
    state: &State<'_>,
    is_dropped: &dyn Fn(&str, &Clause<'_>) -> bool,
) -> BTreeSet<PackageId> {
    let index = solver.index;
    // Minimality. Roots: for each request, the member that satisfies it (the one added
    // for it when there is one).
    let mut root_ids: BTreeSet<PackageId> = BTreeSet::new();
    for (_, clause) in &solver.roots {
        let satisfiers: Vec<PackageId> = clause
            .alternatives
            .iter()
            .flat_map(|r| state.set.satisfiers(index, r).collect::<Vec<_>>())
            .collect();
        let added = satisfiers
            .iter()
            .find(|id| state.parent.get(id).is_some_and(|(p, _)| p.is_none()));
        if let Some(&id) = added.or(satisfiers.first()) {
            root_ids.insert(id);
        }
    }
    let members: BTreeSet<PackageId> = state.order.iter().copied().collect();
    prune(index, &members, &root_ids, is_dropped)
}

/// Why each member is in the closure, breadth-first from the roots (in request order).
fn member_reasons(
    solver: &Solver<'_>,
    members: &BTreeSet<PackageId>,
    is_dropped: &dyn Fn(&str, &Clause<'_>) -> bool,
) -> HashMap<PackageId, Reason> {
    let index = solver.index;
    // Reasons, breadth-first from the roots (in request order).
    let mut set = Set::default();
    for &id in members {
        set.insert(index.get(id));
    }
    let mut reasons: HashMap<PackageId, Reason> = HashMap::new();
    let mut queue = VecDeque::new();
    for (text, clause) in &solver.roots {
        for relation in &clause.alternatives {
            for id in set.satisfiers(index, relation).collect::<Vec<_>>() {
                if members.contains(&id) && !reasons.contains_key(&id) {
                    reasons.insert(
                        id,
                        Reason::Root {
                            request: text.clone(),
                        },
                    );
                    queue.push_back(id);
                }
            }
        }
    }
    while let Some(id) = queue.pop_front() {
        let parent_name = index.get(id).name();
        for clause in live_clauses(index, id, is_dropped).unwrap_or_default() {
            let mut satisfiers: Vec<PackageId> = clause
                .alternatives
                .iter()
                .flat_map(|r| set.satisfiers(index, r).collect::<Vec<_>>())
                .collect();
            satisfiers.sort_by_key(|&s| index.get(s).name());
            for s in satisfiers {
                if let std::collections::hash_map::Entry::Vacant(e) = reasons.entry(s) {
                    e.insert(Reason::Dependency {
                        parent: parent_name.to_owned(),
                        relation: clause.to_string(),
                    });
                    queue.push_back(s);
                }
            }
        }
    }
    reasons
}

/// Checks that `resolution` is closed (every `Depends`/`Pre-Depends` of every member is
/// satisfied inside the set, except dropped relations), conflict-free and minimal (every
/// non-root member is the only member satisfying some relation of another member).
///
/// # Errors
/// The first [`ClosureViolation`] found.
pub fn verify_closure(
    index: &PackageIndex,
    resolution: &Resolution,
) -> Result<(), ClosureViolation> {
    let mut ids = Vec::with_capacity(resolution.packages.len());
    let mut names = HashSet::new();
    for member in &resolution.packages {
        if !names.insert(member.name.as_str()) {
            return Err(ClosureViolation::Duplicate {
                name: member.name.clone(),
            });
        }
        let found = index
            .versions(&member.name)
            .find(|p| p.version().as_str() == member.version.as_str())
            .ok_or_else(|| ClosureViolation::NotInIndex {
                name: member.name.clone(),
                version: member.version.to_string(),
            })?;
        ids.push(found.id());
    }
    let dropped: HashSet<(&str, String)> = resolution
        .dropped
        .iter()
        .map(|d| (d.package.as_str(), d.relation.clone()))
        .collect();
    let is_dropped =
        |package: &str, clause: &Clause<'_>| dropped.contains(&(package, clause.to_string()));
    let mut set = Set::default();
    for &id in &ids {
        set.insert(index.get(id));
    }
    let mut sole: HashSet<PackageId> = HashSet::new();
    for &id in &ids {
        let package = index.get(id);
        let clauses = live_clauses(index, id, &is_dropped).map_err(|source| {
            ClosureViolation::InvalidRelations {
                package: package.name().to_owned(),
                source,
            }
        })?;
        for clause in &clauses {
            let satisfiers: BTreeSet<PackageId> = clause
                .alternatives
                .iter()
                .flat_map(|r| set.satisfiers(index, r).collect::<Vec<_>>())
                .collect();
            if satisfiers.is_empty() {
                return Err(ClosureViolation::Unsatisfied {
                    package: package.name().to_owned(),
                    relation: clause.to_string(),
                });
            }
            if satisfiers.len() == 1 {
                sole.extend(satisfiers.iter().filter(|&&s| s != id));
            }
        }
    }
    let conflicts: Vec<Vec<Clause<'_>>> = ids
        .iter()
        .map(|&id| {
            index
                .get(id)
                .conflicts()
                .map_err(|source| ClosureViolation::InvalidRelations {
                    package: index.get(id).name().to_owned(),
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    for (i, &a) in ids.iter().enumerate() {
        for (j, &b) in ids.iter().enumerate().skip(i + 1) {
            if let Some((x, y, conflict)) =
                conflict_between(index.get(a), &conflicts[i], index.get(b), &conflicts[j])
            {
                return Err(ClosureViolation::Conflict {
                    package: x.name().to_owned(),
                    other: y.name().to_owned(),
                    conflict,
                });
            }
        }
    }
    for (member, &id) in resolution.packages.iter().zip(&ids) {
        if !matches!(member.reason, Reason::Root { .. }) && !sole.contains(&id) {
            return Err(ClosureViolation::NotNeeded {
                package: member.name.clone(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Suggestions for unknown names.

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// Up to 5 names close to `name`: prefix matches, then substring matches (shortest
/// first), then names within a small edit distance.
fn suggest(index: &PackageIndex, name: &str) -> Vec<String> {
    if name.is_empty() {
        return Vec::new();
    }
    let length = name.chars().count();
    let max_distance = if length <= 3 {
        1
    } else {
        (length / 3).clamp(2, 3)
    };
    let mut scored: Vec<(usize, usize, &str)> = Vec::new();
    let mut seen = HashSet::new();
    for candidate in index.names().chain(index.virtual_names()) {
        if !seen.insert(candidate) {
            continue;
        }
        let score = if candidate.starts_with(name) {
            Some(0)
        } else if candidate.contains(name) {
            Some(1)
        } else if candidate.len().abs_diff(name.len()) <= max_distance {
            let d = edit_distance(name, candidate);
            (d <= max_distance).then_some(1 + d)
        } else {
            None
        };
        if let Some(score) = score {
            scored.push((score, candidate.len(), candidate));
        }
    }
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, _, n)| n.to_owned())
        .collect()
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (via `{}`)", self.package, self.relation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::tests::stanza;

    /// `(name, version, installed KiB, extra fields)`.
    fn index(packages: &[(&str, &str, u64, &str)]) -> PackageIndex {
        let text: String = packages
            .iter()
            .map(|(name, version, kib, extra)| {
                stanza(name, version, extra)
                    .replace("Installed-Size: 100", &format!("Installed-Size: {kib}"))
            })
            .collect();
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        index
    }

    fn request(install: &[&str]) -> SolveRequest {
        SolveRequest {
            install: install.iter().map(|s| (*s).to_owned()).collect(),
            arch: "amd64".into(),
            ..SolveRequest::default()
        }
    }

    fn names(resolution: &Resolution) -> Vec<&str> {
        resolution
            .packages
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }

    fn solve_ok(index: &PackageIndex, request: &SolveRequest) -> Resolution {
        let resolution = solve(index, request).unwrap();
        verify_closure(index, &resolution).unwrap();
        resolution
    }

    #[test]
    fn follows_depends_and_pre_depends_only() {
        let idx = index(&[
            (
                "app",
                "1",
                10,
                "Depends: lib (>= 1)\nPre-Depends: pre\nRecommends: rec\nSuggests: sug",
            ),
            ("lib", "1.5", 10, "Depends: libc"),
            ("libc", "2", 10, "Essential: yes\nPriority: required"),
            ("pre", "1", 10, ""),
            ("rec", "1", 10, ""),
            ("sug", "1", 10, ""),
            ("base-files", "1", 10, "Essential: yes\nPriority: required"),
        ]);
        let r = solve_ok(&idx, &request(&["app"]));
        assert_eq!(names(&r), ["app", "lib", "libc", "pre"]);
        assert_eq!(r.installed_size_kib(), 40);
        assert_eq!(r.download_size(), 4000);
        let why: Vec<String> = r
            .why("libc")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            why,
            [
                "app (via `app`)",
                "lib (via `lib (>= 1)`)",
                "libc (via `libc`)"
            ]
        );
        assert!(r.why("rec").is_none());
        assert_eq!(r.get("lib").unwrap().version.as_str(), "1.5");
    }

    #[test]
    fn first_alternative_by_default() {
        let idx = index(&[
            ("app", "1", 1, "Depends: a | b"),
            ("a", "1", 1000, ""),
            ("b", "1", 1, ""),
        ]);
        assert_eq!(names(&solve_ok(&idx, &request(&["app"]))), ["a", "app"]);
    }

    #[test]
    fn size_rule_picks_much_smaller_later_alternative() {
        // a pulls 4 MiB, b pulls 1 MiB: b is < half and >= 1 MiB smaller.
        let idx = index(&[
            ("app", "1", 1, "Depends: a | b"),
            ("a", "1", 1024, "Depends: big"),
            ("big", "1", 3072, ""),
            ("b", "1", 1024, ""),
        ]);
        assert_eq!(names(&solve_ok(&idx, &request(&["app"]))), ["app", "b"]);
        // Less than 1 MiB difference: keep the first even though it is 3x bigger.
        let idx = index(&[
            ("app", "1", 1, "Depends: a | b"),
            ("a", "1", 900, "Depends: c"),
            ("c", "1", 1, ""),
            ("b", "1", 300, "Depends: d"),
            ("d", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["a", "app", "c"]
        );
    }

    #[test]
    fn already_satisfied_alternative_is_reused() {
        let idx = index(&[
            ("app", "1", 1, "Depends: b, x"),
            ("x", "1", 1, "Depends: a | b"),
            ("a", "1", 1, ""),
            ("b", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "b", "x"]
        );
    }

    #[test]
    fn alternative_with_satisfied_closure_beats_first() {
        let idx = index(&[
            ("app", "1", 1, "Depends: lib, x"),
            ("x", "1", 1, "Depends: a | b"),
            ("a", "1", 1, "Depends: extra"),
            ("extra", "1", 1, ""),
            ("b", "1", 1, "Depends: lib"),
            ("lib", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "b", "lib", "x"]
        );
    }

    #[test]
    fn prefer_wins() {
        let idx = index(&[
            ("app", "1", 1, "Depends: a | b, v"),
            ("a", "1", 1, ""),
            ("b", "1", 1, ""),
            ("p1", "1", 1, "Provides: v"),
            ("p2", "1", 1, "Provides: v"),
        ]);
        let mut req = request(&["app"]);
        assert_eq!(names(&solve_ok(&idx, &req)), ["a", "app", "p1"]);
        req.prefer = vec!["b".into(), "p2".into()];
        assert_eq!(names(&solve_ok(&idx, &req)), ["app", "b", "p2"]);
    }

    #[test]
    fn virtual_packages_and_versioned_provides() {
        let idx = index(&[
            ("app", "1", 1, "Depends: v (>= 2), w"),
            ("old", "1", 1, "Provides: v (= 1)"),
            ("plain", "1", 1, "Provides: v"),
            ("new", "1", 1, "Provides: v (= 2.5)"),
            ("wp", "1", 1, "Provides: w"),
        ]);
        let r = solve_ok(&idx, &request(&["app"]));
        assert_eq!(names(&r), ["app", "new", "wp"]);
        // Unversioned provides never satisfy a versioned dependency.
        let idx = index(&[
            ("app", "1", 1, "Depends: v (>= 1)"),
            ("plain", "1", 1, "Provides: v"),
        ]);
        let err = solve(&idx, &request(&["app"])).unwrap_err();
        assert!(matches!(err, SolveError::Unsatisfiable { .. }), "{err}");
    }

    #[test]
    fn providers_ordered_by_size_then_name() {
        let idx = index(&[
            ("app", "1", 1, "Depends: v"),
            ("p-a", "1", 5000, "Provides: v"),
            ("p-b", "1", 10, "Provides: v"),
            ("p-c", "1", 10, "Provides: v"),
        ]);
        assert_eq!(names(&solve_ok(&idx, &request(&["app"]))), ["app", "p-b"]);
    }

    #[test]
    fn multi_arch_any_needs_allowed_or_foreign() {
        let idx = index(&[
            ("app", "1", 1, "Depends: py:any, tool:any"),
            ("py", "1", 1, "Multi-Arch: allowed"),
            ("tool", "1", 1, "Multi-Arch: foreign"),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "py", "tool"]
        );
        let idx = index(&[
            ("app", "1", 1, "Depends: lib:any"),
            ("lib", "1", 1, "Multi-Arch: same"),
        ]);
        let err = solve(&idx, &request(&["app"])).unwrap_err();
        let SolveError::Unsatisfiable { reason, .. } = err else {
            panic!("{err:?}")
        };
        assert!(reason.contains("Multi-Arch: same"), "{reason}");
        let idx = index(&[
            ("app", "1", 1, "Depends: lib:amd64, x:native"),
            ("lib", "1", 1, ""),
            ("x", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "lib", "x"]
        );
    }

    #[test]
    fn conflicts_backtrack_to_next_alternative() {
        let idx = index(&[
            ("app", "1", 1, "Depends: base, a | b"),
            ("base", "1", 1, "Conflicts: a"),
            ("a", "1", 1, ""),
            ("b", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "b", "base"]
        );
    }

    #[test]
    fn deep_conflict_backtracks_and_discards_branch() {
        // a pulls x, which conflicts with y (needed later): switch to b; x must vanish.
        let idx = index(&[
            ("app", "1", 1, "Depends: a | b, late"),
            ("a", "1", 1, "Depends: x"),
            ("x", "1", 1, "Depends: xlib"),
            ("xlib", "1", 1, "Breaks: y (<< 2)"),
            ("b", "1", 1, "Depends: bdep"),
            ("bdep", "1", 1, ""),
            ("late", "1", 1, "Depends: y"),
            ("y", "1", 1, ""),
        ]);
        let r = solve_ok(&idx, &request(&["app"]));
        assert_eq!(names(&r), ["app", "b", "bdep", "late", "y"]);
    }

    #[test]
    fn conflicts_via_virtual_name_and_not_with_itself() {
        let idx = index(&[
            ("app", "1", 1, "Depends: mta, other"),
            (
                "mta",
                "1",
                1,
                "Provides: mail-transport-agent\nConflicts: mail-transport-agent",
            ),
            ("other", "1", 1, "Depends: mta2 | fallback"),
            (
                "mta2",
                "1",
                1,
                "Provides: mail-transport-agent\nConflicts: mail-transport-agent",
            ),
            ("fallback", "1", 1, ""),
        ]);
        assert_eq!(
            names(&solve_ok(&idx, &request(&["app"]))),
            ["app", "fallback", "mta", "other"]
        );
    }

    #[test]
    fn unresolvable_conflict_is_an_error_with_chains() {
        let idx = index(&[
            ("app", "1", 1, "Depends: a, b"),
            ("a", "1", 1, ""),
            ("b", "1", 1, "Depends: c"),
            ("c", "1", 1, "Breaks: a"),
        ]);
        let err = solve(&idx, &request(&["app"])).unwrap_err();
        assert_eq!(
            err,
            SolveError::Conflict {
                chain: vec!["app".into(), "b".into()],
                relation: "c".into(),
                package: "c".into(),
                other: "a".into(),
                other_chain: vec!["app".into(), "a".into()],
                conflict: "`c` Breaks: a".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "`c` (for `c`, needed by app -> b) conflicts with `a` (needed by app -> a): `c` Breaks: a"
        );
    }

    #[test]
    fn unsatisfiable_names_the_chain() {
        let idx = index(&[
            ("app", "1", 1, "Depends: mid"),
            ("mid", "1", 1, "Depends: lib (>= 3) | gone"),
            ("lib", "2", 1, ""),
        ]);
        let err = solve(&idx, &request(&["app"])).unwrap_err();
        assert_eq!(
            err,
            SolveError::Unsatisfiable {
                chain: vec!["app".into(), "mid".into()],
                relation: "lib (>= 3) | gone".into(),
                reason: "candidate `lib` is version 2; no package or provider named `gone`".into(),
            }
        );
        let err = solve(&idx, &request(&["lib (>= 3)"])).unwrap_err();
        assert!(
            matches!(&err, SolveError::Unsatisfiable { chain, .. } if chain.is_empty()),
            "{err:?}"
        );
        assert!(solve(&idx, &request(&["lib (>= 2)"])).is_ok());
    }

    #[test]
    fn architecture_must_match_index() {
        let idx = index(&[("app", "1", 1, "")]);
        let mut req = request(&["app"]);
        req.arch = "arm64".into();
        assert_eq!(
            solve(&idx, &req).unwrap_err().to_string(),
            "request is for `arm64` but the package index is for `amd64`"
        );
    }

    #[test]
    fn unknown_package_suggests_names() {
        let idx = index(&[
            ("nginx", "1", 1, ""),
            ("nginx-full", "1", 1, ""),
            ("libnginx-mod-http", "1", 1, ""),
            ("ngircd", "1", 1, ""),
            ("zsh", "1", 1, "Provides: shell"),
        ]);
        let err = solve(&idx, &request(&["ngnix"])).unwrap_err();
        let SolveError::UnknownPackage { name, suggestions } = err else {
            panic!()
        };
        assert_eq!(name, "ngnix");
        assert_eq!(suggestions, ["nginx"]);
        let SolveError::UnknownPackage { suggestions, .. } =
            solve(&idx, &request(&["nginx-"])).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(suggestions, ["nginx-full", "libnginx-mod-http", "nginx"]);
        let SolveError::UnknownPackage { suggestions, .. } =
            solve(&idx, &request(&["nginx-mod"])).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(suggestions, ["libnginx-mod-http"]);
        // Virtual names are valid roots.
        assert_eq!(names(&solve_ok(&idx, &request(&["shell"]))), ["zsh"]);
        assert!(matches!(
            solve(&idx, &request(&["Bad Name"])),
            Err(SolveError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn exclude_and_drop_with_reason_are_reported() {
        let idx = index(&[
            (
                "linux-image",
                "1",
                1,
                "Depends: kmod, initramfs-tools | linux-initramfs-tool, base",
            ),
            ("kmod", "1", 1, ""),
            ("initramfs-tools", "1", 1, ""),
            ("base", "1", 1, "Depends: docs"),
            ("docs", "1", 1, ""),
        ]);
        let mut req = request(&["linux-image"]);
        req.drop_with_reason = vec![
            (
                "linux-initramfs-tool".into(),
                "jeos builds its own initramfs".into(),
            ),
            ("kmod".into(), "modules are loaded by guest-init".into()),
        ];
        req.exclude = vec!["docs".into()];
        let r = solve_ok(&idx, &req);
        assert_eq!(names(&r), ["base", "linux-image"]);
        assert_eq!(
            r.dropped,
            [
                DroppedRelation {
                    package: "base".into(),
                    relation: "docs".into(),
                    reason: "excluded by the recipe".into()
                },
                DroppedRelation {
                    package: "linux-image".into(),
                    relation: "initramfs-tools | linux-initramfs-tool".into(),
                    reason: "jeos builds its own initramfs".into()
                },
                DroppedRelation {
                    package: "linux-image".into(),
                    relation: "kmod".into(),
                    reason: "modules are loaded by guest-init".into()
                },
            ]
        );
        assert_eq!(
            r.warnings,
            [SolveWarning::Excluded {
                package: "base".into(),
                relation: "docs".into()
            }]
        );
    }

    #[test]
    fn minimal_after_redundant_choice() {
        // x picks a (first alternative), later app needs b which also provides what x wanted.
        let idx = index(&[
            ("app", "1", 1, "Depends: x, y"),
            ("x", "1", 1, "Depends: a | v"),
            ("a", "1", 1, ""),
            ("y", "1", 1, "Depends: b"),
            ("b", "1", 1, "Provides: v"),
        ]);
        let r = solve_ok(&idx, &request(&["app"]));
        assert_eq!(names(&r), ["app", "b", "x", "y"]);
        let why: Vec<String> = r.why("b").unwrap().into_iter().map(|s| s.package).collect();
        assert_eq!(why, ["app", "x", "b"]);
    }

    #[test]
    fn verify_closure_detects_violations() {
        let idx = index(&[
            ("app", "1", 1, "Depends: lib"),
            ("lib", "1", 1, ""),
            ("extra", "1", 1, "Conflicts: lib"),
        ]);
        let good = solve_ok(&idx, &request(&["app"]));
        let mut missing = good.clone();
        missing.packages.retain(|p| p.name != "lib");
        assert!(matches!(
            verify_closure(&idx, &missing),
            Err(ClosureViolation::Unsatisfied { .. })
        ));
        let extra = solve(&idx, &request(&["extra"])).unwrap();
        let mut both = good.clone();
        both.packages.extend(extra.packages);
        both.packages.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(matches!(
            verify_closure(&idx, &both),
            Err(ClosureViolation::Conflict { .. })
        ));
        let mut wrong_version = good.clone();
        wrong_version.packages[0].version = "9".parse().unwrap();
        assert!(matches!(
            verify_closure(&idx, &wrong_version),
            Err(ClosureViolation::NotInIndex { .. })
        ));
        let mut duplicate = good;
        duplicate.packages.push(duplicate.packages[0].clone());
        assert!(matches!(
            verify_closure(&idx, &duplicate),
            Err(ClosureViolation::Duplicate { .. })
        ));
    }

    #[test]
    fn verify_closure_flags_unneeded_member() {
        let idx = index(&[("app", "1", 1, ""), ("stray", "1", 1, "")]);
        let mut r = solve_ok(&idx, &request(&["app", "stray"]));
        r.packages[1].reason = Reason::Dependency {
            parent: "app".into(),
            relation: "stray".into(),
        };
        assert_eq!(
            verify_closure(&idx, &r),
            Err(ClosureViolation::NotNeeded {
                package: "stray".into()
            })
        );
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// Random small index: 8 packages `p0..p7`, each with up to 3 dependency clauses of
        /// up to 2 alternatives (possibly versioned, possibly virtual `v0..v2`), optional
        /// provides and conflicts.
        fn random_index() -> impl Strategy<Value = String> {
            let relation = (0usize..11, prop::option::of((0usize..3, 1u32..3))).prop_map(
                |(target, constraint)| {
                    let name = if target < 8 {
                        format!("p{target}")
                    } else {
                        format!("v{}", target - 8)
                    };
                    match constraint {
                        Some((op, v)) => format!("{name} ({} {v})", [">=", "<<", "="][op]),
                        None => name,
                    }
                },
            );
            let clause =
                prop::collection::vec(relation.clone(), 1..3).prop_map(|alts| alts.join(" | "));
            let package = (
                1u32..3,
                prop::collection::vec(clause, 0..3),
                prop::option::of((0usize..3, prop::option::of(1u32..3))),
                prop::option::of(relation),
            );
            prop::collection::vec(package, 8).prop_map(|packages| {
                let mut text = String::new();
                for (i, (version, deps, provides, conflicts)) in packages.into_iter().enumerate() {
                    let mut extra = String::new();
                    if !deps.is_empty() {
                        extra.push_str(&format!("Depends: {}\n", deps.join(", ")));
                    }
                    if let Some((v, pv)) = provides {
                        match pv {
                            Some(pv) => extra.push_str(&format!("Provides: v{v} (= {pv})\n")),
                            None => extra.push_str(&format!("Provides: v{v}\n")),
                        }
                    }
                    if let Some(c) = conflicts {
                        extra.push_str(&format!("Conflicts: {c}\n"));
                    }
                    text.push_str(&stanza(&format!("p{i}"), &version.to_string(), &extra));
                }
                text
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn results_are_closed_conflict_free_and_minimal(text in random_index(), root in 0usize..8) {
                let idx = PackageIndex::parse(&[text], "amd64").unwrap();
                prop_assert!(idx.warnings().is_empty());
                match solve(&idx, &request(&[&format!("p{root}")])) {
                    Ok(r) => {
                        let check = verify_closure(&idx, &r);
                        prop_assert!(check.is_ok(), "{:?}", check);
                        let root_name = format!("p{root}");
                        prop_assert!(r.get(&root_name).is_some());
                        for p in &r.packages {
                            prop_assert!(r.why(&p.name).is_some());
                        }
                    }
                    Err(SolveError::Unsatisfiable { .. } | SolveError::Conflict { .. }) => {}
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
            }
        }
    }
}
