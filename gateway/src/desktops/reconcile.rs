//! At gateway start: the store made to agree with what the runtime still runs.

use std::collections::HashMap;

use orgo_proto::connect::Target;

use super::{DesktopError, Desktops};
use crate::store::Status;

impl Desktops {
    /// Takes over desktops the runtime kept running (containers outlive the gateway) and marks
    /// the rest stopped, so the database never claims a desktop that is not there and none is
    /// lost from it.
    pub async fn reconcile(&self) -> Result<(), DesktopError> {
        let computers = self.store.all_computers()?;
        let known: Vec<String> = computers.iter().map(|c| c.id.clone()).collect();
        let alive: HashMap<String, Target> = self.runtime.adopt(&known).await.into_iter().collect();
        for computer in computers {
            match alive.get(&computer.id) {
                Some(target) => match orgo_proto::connect::connect(target).await {
                    Ok(client) => {
                        tracing::info!(computer = %computer.name, "adopted a running desktop");
                        self.agents.lock().await.insert(computer.id.clone(), client);
                        self.store.set_status(&computer.id, Status::Running)?;
                    }
                    Err(e) => {
                        tracing::warn!(computer = %computer.name, error = %e, "cannot reach an adopted desktop");
                        self.store.set_status(&computer.id, Status::Error)?;
                    }
                },
                None if computer.status != Status::Stopped => {
                    tracing::info!(computer = %computer.name, was = computer.status.as_str(), "marking stopped");
                    self.store.set_status(&computer.id, Status::Stopped)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}
