//! One module per page, kanidm-style: each builds its template's data from
//! the API's services and renders it.

pub mod audit;
pub mod jobs;
pub mod keys;
pub mod login;
pub mod products;
pub mod publish;
pub mod release;
