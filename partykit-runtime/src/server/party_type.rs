//! A party type with its type erased, so one server can hold several.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use crate::error::catch_panic;
use crate::room::{RoomActor, Seed};
use crate::{
    Before, Cron, CronLobby, FetchLobby, FetchSocket, Handlers, Lobby, Party, Request, Response,
    Result,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait PartyType: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn handlers(&self) -> Handlers;
    fn spawn_room(&self, seed: Seed);
    fn before_connect<'a>(
        &self,
        request: Request,
        lobby: &'a Lobby,
    ) -> BoxFuture<'a, Result<Before>>;
    fn before_request<'a>(
        &self,
        request: Request,
        lobby: &'a Lobby,
    ) -> BoxFuture<'a, Result<Before>>;
    fn fetch<'a>(
        &self,
        request: Request,
        lobby: &'a FetchLobby,
    ) -> BoxFuture<'a, Result<Option<Response>>>;
    fn socket<'a>(&self, socket: FetchSocket, lobby: &'a FetchLobby) -> BoxFuture<'a, Result<()>>;
    fn cron<'a>(&self, cron: Cron, lobby: &'a CronLobby) -> BoxFuture<'a, Result<()>>;
}

pub(crate) struct Typed<P>(PhantomData<fn() -> P>);

impl<P> Typed<P> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<P: Party> PartyType for Typed<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn handlers(&self) -> Handlers {
        P::HANDLERS
    }

    fn spawn_room(&self, seed: Seed) {
        RoomActor::<P>::spawn(seed);
    }

    fn before_connect<'a>(
        &self,
        request: Request,
        lobby: &'a Lobby,
    ) -> BoxFuture<'a, Result<Before>> {
        Box::pin(catch_panic("on_before_connect", async move {
            P::on_before_connect(request, lobby).await
        }))
    }

    fn before_request<'a>(
        &self,
        request: Request,
        lobby: &'a Lobby,
    ) -> BoxFuture<'a, Result<Before>> {
        Box::pin(catch_panic("on_before_request", async move {
            P::on_before_request(request, lobby).await
        }))
    }

    fn fetch<'a>(
        &self,
        request: Request,
        lobby: &'a FetchLobby,
    ) -> BoxFuture<'a, Result<Option<Response>>> {
        Box::pin(catch_panic("on_fetch", async move {
            P::on_fetch(request, lobby).await
        }))
    }

    fn socket<'a>(&self, socket: FetchSocket, lobby: &'a FetchLobby) -> BoxFuture<'a, Result<()>> {
        Box::pin(catch_panic("on_socket", async move {
            P::on_socket(socket, lobby).await
        }))
    }

    fn cron<'a>(&self, cron: Cron, lobby: &'a CronLobby) -> BoxFuture<'a, Result<()>> {
        Box::pin(catch_panic("on_cron", async move {
            P::on_cron(cron, lobby).await
        }))
    }
}
