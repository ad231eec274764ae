//! Least-privilege keys: `apps` and `cidrs` scopes inside the signed key — how they are
//! signed and verified ([`tokens`]), and how a node enforces them on every push protocol
//! ([`pushes`]) and on reads through the read proxy ([`reads`]).

mod pushes;
mod reads;
mod tokens;
