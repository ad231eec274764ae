//! A node enforcing scopes on pushes.
