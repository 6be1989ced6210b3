"""GET /v1/models: the one served model id."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.dependencies import SettingsDep
from gateway.errors import NotFoundError
from gateway.protocol import ErrorResponse, ModelCard, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(settings: SettingsDep) -> ModelList:
    return ModelList(data=[ModelCard(id=settings.model.id)])


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
async def retrieve_model(model_id: str, settings: SettingsDep) -> ModelCard:
    if model_id != settings.model.id:
        raise NotFoundError(f"model '{model_id}' not found", param="model", code="model_not_found")
    return ModelCard(id=settings.model.id)
