//! `revoked_sessions`: the deny-list of sessions whose access tokens are refused before their
//! `exp`. A session is a refresh-token family; a row lives until the last access token the
//! session could have issued has expired, then it is pruned. `id` gives the append order other
//! nodes poll by.

use sea_orm_migration::prelude::*;

/// Creates `revoked_sessions`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RevokedSessions {
    Table,
    Id,
    Sid,
    ExpiresAt,
    RevokedAt,
}

const EXPIRES_INDEX: &str = "idx_revoked_sessions_expires_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RevokedSessions::Table)
                    .col(
                        ColumnDef::new(RevokedSessions::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RevokedSessions::Sid).text().not_null().unique_key())
                    .col(ColumnDef::new(RevokedSessions::ExpiresAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(RevokedSessions::RevokedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EXPIRES_INDEX)
                    .table(RevokedSessions::Table)
                    .col(RevokedSessions::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RevokedSessions::Table).if_exists().to_owned()).await
    }
}
