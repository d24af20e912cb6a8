//! The store both object kinds share: every object of a kind by ID, its name reservations,
//! and its checkpoint directory — opened (every checkpoint loaded, names reserved), added
//! (name reserved, checkpoint written, then visible), looked up by ID or unique prefix,
//! listed oldest first, deleted (checkpoint, entry, name).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::{find_by_prefix, CheckpointDir, Names, StoreError};

/// An object kind the store holds.
pub trait Object: Sized {
    /// The kind, in messages and checkpoint envelopes.
    const KIND: &'static str;
    /// The checkpoint layout version this berthd writes (and reads up to).
    const VERSION: u32;
    /// What one checkpoint file holds.
    type Checkpoint: DeserializeOwned;

    /// The object from its checkpoint; it writes its own later checkpoints to `dir`.
    fn from_checkpoint(cp: Self::Checkpoint, dir: CheckpointDir) -> Self;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn created_at(&self) -> DateTime<Utc>;
    /// Writes the object's checkpoint. Blocking.
    fn save(&self) -> Result<(), StoreError>;
}

/// Every object of one kind.
#[derive(Debug)]
pub struct ObjectStore<T> {
    objects: RwLock<HashMap<String, Arc<T>>>,
    names: Names,
    checkpoints: CheckpointDir,
}

impl<T: Object> ObjectStore<T> {
    /// Opens the store in `dir` and loads every checkpoint; records that cannot be read (or
    /// whose name is taken) are returned with their errors and skipped. Blocking.
    pub fn open(dir: impl Into<PathBuf>) -> (Self, Vec<StoreError>) {
        let store = Self {
            objects: RwLock::new(HashMap::new()),
            names: Names::new(T::KIND),
            checkpoints: CheckpointDir::new(dir, T::KIND, T::VERSION),
        };
        let mut errors = Vec::new();
        for (_, loaded) in store.checkpoints.load_all::<T::Checkpoint>() {
            let object = match loaded {
                Ok(cp) => T::from_checkpoint(cp, store.checkpoints.clone()),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Err(e) = store.names.reserve(object.name(), object.id()) {
                errors.push(e);
                continue;
            }
            store.insert(Arc::new(object));
        }
        (store, errors)
    }

    /// The directory the objects checkpoint to (for building new ones).
    pub fn checkpoints(&self) -> &CheckpointDir {
        &self.checkpoints
    }

    fn insert(&self, object: Arc<T>) {
        self.objects
            .write()
            .expect("objects lock")
            .insert(object.id().to_owned(), object);
    }

    /// Reserves `name` for `id` (AlreadyExists while another object holds it).
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        self.names.reserve(name, id)
    }

    /// Releases `name` if `id` holds it.
    pub fn release_name(&self, name: &str, id: &str) {
        self.names.release(name, id)
    }

    /// Adds an object (its name reserved first): writes its checkpoint, then makes it
    /// visible. Blocking.
    pub fn add_object(&self, object: T) -> Result<Arc<T>, StoreError> {
        self.names.reserve(object.name(), object.id())?;
        object.save()?;
        let object = Arc::new(object);
        self.insert(object.clone());
        Ok(object)
    }

    /// The object with this ID or unique ID prefix.
    pub fn get(&self, id: &str) -> Result<Arc<T>, StoreError> {
        let objects = self.objects.read().expect("objects lock");
        find_by_prefix(&objects, id, T::KIND).cloned()
    }

    /// Every object, oldest first.
    pub fn list(&self) -> Vec<Arc<T>> {
        let mut all: Vec<_> = self
            .objects
            .read()
            .expect("objects lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at(), a.id()).cmp(&(b.created_at(), b.id())));
        all
    }

    /// Forgets an object: deletes its checkpoint, then its entry and its name. Blocking.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.checkpoints.remove(id)?;
        let removed = self.objects.write().expect("objects lock").remove(id);
        if let Some(object) = removed {
            self.names.release(object.name(), id);
        }
        Ok(())
    }
}
