//! `jobs` (one row per background job, its state, progress and checkpoint),
//! `job_schedule_runs` (one row per schedule tick that was started: the unique key
//! that starts each tick once across all nodes) and `leases` (named, expiring
//! leases: on SQLite one outbox relay per database file holds `outbox-relay`).

use sea_orm_migration::prelude::*;

/// Creates `jobs`, `job_schedule_runs` and `leases`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Kind,
    Payload,
    State,
    Attempts,
    MaxAttempts,
    Processed,
    Total,
    Message,
    Checkpoint,
    Result,
    LastError,
    CreatedBy,
    IdempotencyKey,
    CancelRequested,
    LockedBy,
    LockedUntil,
    CreatedAt,
    UpdatedAt,
    StartedAt,
    FinishedAt,
    RunAfter,
}

#[derive(DeriveIden)]
enum JobScheduleRuns {
    Table,
    Schedule,
    Tick,
    JobId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(ColumnDef::new(Jobs::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Jobs::Kind).text().not_null())
                    .col(ColumnDef::new(Jobs::Payload).json_binary().not_null())
                    .col(ColumnDef::new(Jobs::State).text().not_null())
                    .col(ColumnDef::new(Jobs::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::MaxAttempts).integer().not_null())
                    .col(ColumnDef::new(Jobs::Processed).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::Total).big_integer().null())
                    .col(ColumnDef::new(Jobs::Message).text().null())
                    .col(ColumnDef::new(Jobs::Checkpoint).json_binary().null())
                    .col(ColumnDef::new(Jobs::Result).json_binary().null())
                    .col(ColumnDef::new(Jobs::LastError).text().null())
                    .col(ColumnDef::new(Jobs::CreatedBy).text().not_null())
                    .col(ColumnDef::new(Jobs::IdempotencyKey).text().null().unique_key())
                    .col(ColumnDef::new(Jobs::CancelRequested).boolean().not_null().default(false))
                    .col(ColumnDef::new(Jobs::LockedBy).text().null())
                    .col(ColumnDef::new(Jobs::LockedUntil).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::FinishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::RunAfter).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // listing newest first, by state and kind; pruning by finish time
        for (name, columns) in [
            ("idx_jobs_created", vec![Jobs::CreatedAt, Jobs::Id]),
            ("idx_jobs_state_created", vec![Jobs::State, Jobs::CreatedAt, Jobs::Id]),
            ("idx_jobs_kind_created", vec![Jobs::Kind, Jobs::CreatedAt, Jobs::Id]),
            ("idx_jobs_finished", vec![Jobs::FinishedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Jobs::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(JobScheduleRuns::Table)
                    .col(ColumnDef::new(JobScheduleRuns::Schedule).text().not_null())
                    .col(ColumnDef::new(JobScheduleRuns::Tick).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(JobScheduleRuns::JobId).text().not_null())
                    .col(ColumnDef::new(JobScheduleRuns::CreatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(JobScheduleRuns::Schedule).col(JobScheduleRuns::Tick))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .col(ColumnDef::new(Leases::Name).text().not_null().primary_key())
                    .col(ColumnDef::new(Leases::Holder).text().not_null())
                    .col(ColumnDef::new(Leases::ExpiresAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Jobs::Table.into_iden(), JobScheduleRuns::Table.into_iden(), Leases::Table.into_iden()]
        {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
