//! Which `secret` label a secret gets: the name the user gave it, its id if the user opted in,
//! else `other`.

use std::collections::HashMap;

use ::metrics::SharedString;

/// The label of secrets neither named nor labelled by id.
pub(crate) const OTHER: &str = "other";

pub(crate) struct SecretLabels {
    ids: bool,
    names: HashMap<String, SharedString>,
}

impl SecretLabels {
    pub(crate) fn new(ids: bool, names: HashMap<String, String>) -> Self {
        SecretLabels {
            ids,
            names: names
                .into_iter()
                .map(|(id, name)| (id, SharedString::from(name)))
                .collect(),
        }
    }

    pub(crate) fn of(&self, id: &str) -> SharedString {
        match self.names.get(id) {
            Some(name) => name.clone(),
            None if self.ids => SharedString::from(id.to_owned()),
            None => SharedString::const_str(OTHER),
        }
    }
}
