//! A client made on first use and kept for the life of the function instance.
//!
//! A service client of the AWS SDK costs a tenth of a millisecond or more to create. A function
//! creates the ones every invocation needs at start, and these for the rest: an approval request
//! that only reads never makes the SQS or SES client, an executor running Gmail steps never makes
//! the Scheduler client. Cloning shares the one client.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

type Make<C> = Box<dyn Fn() -> C + Send + Sync>;

pub struct OnFirstUse<C>(Arc<Inner<C>>);

struct Inner<C> {
    client: OnceLock<C>,
    make: Make<C>,
}

impl<C> OnFirstUse<C> {
    /// A client `make` creates when it is first used.
    pub fn new(make: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Self(Arc::new(Inner { client: OnceLock::new(), make: Box::new(make) }))
    }

    /// An AWS service client over `aws`, created on first use (`make` is e.g.
    /// `aws_sdk_sqs::Client::new`).
    pub fn aws(aws: &aws_config::SdkConfig, make: fn(&aws_config::SdkConfig) -> C) -> Self
    where
        C: 'static,
    {
        let aws = aws.clone();
        Self::new(move || make(&aws))
    }

    /// Whether it has been created.
    pub fn is_made(&self) -> bool {
        self.0.client.get().is_some()
    }
}

impl<C: Clone + Send + Sync + 'static> From<C> for OnFirstUse<C> {
    /// A client that already exists.
    fn from(client: C) -> Self {
        let made = OnceLock::new();
        let _ = made.set(client.clone());
        Self(Arc::new(Inner { client: made, make: Box::new(move || client.clone()) }))
    }
}

impl<C> Clone for OnFirstUse<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<C> Deref for OnFirstUse<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.0.client.get_or_init(|| (self.0.make)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn made_once_on_first_use_and_shared_by_clones() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let lazy = OnFirstUse::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            String::from("client")
        });
        let copy = lazy.clone();
        assert!(!lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 0, "nothing is made before it is used");
        assert_eq!(copy.len(), 6);
        assert_eq!(*lazy, "client");
        assert!(lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 1, "made once, for every clone");
    }

    #[test]
    fn an_existing_client_is_used_as_it_is() {
        let ready = OnFirstUse::from(String::from("ready"));
        assert!(ready.is_made());
        assert_eq!(*ready, "ready");
    }
}
