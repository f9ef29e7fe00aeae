"""The Try page: inputs to a finished run, predictions back through `hftl.load(run).predict` (what `hftl predict`
calls), shown the way the prediction is shaped: label bars for probabilities, highlighted spans for entities, the
continuation for generated text, the fillers of each mask. The page reads the shape of the predictions and the
recipe's declaration (`inputs_are_paths`, `generates_text`), never a task name."""

from __future__ import annotations

import gradio as gr

from hftl.errors import HftlError
from hftl.ui.context import message

#: most inputs one click predicts
MAX_INPUTS = 64


def label_bars(prediction: dict) -> dict | None:
    """gr.Label's value: label -> probability (classification), or filler -> score (the first mask)."""
    if isinstance(prediction.get("probabilities"), dict):
        return {str(k): float(v) for k, v in prediction["probabilities"].items()}
    masks = prediction.get("masks")
    if masks and masks[0]:
        return {str(m["token"]): float(m["score"]) for m in masks[0]}
    return None


def highlighted(text: str, prediction: dict) -> dict | None:
    """gr.HighlightedText's value: the input with its entity spans (character offsets the run predicted)."""
    entities = prediction.get("entities")
    if entities is None:
        return None
    return {"text": text, "entities": [{"entity": e["entity"], "start": int(e["start"]), "end": int(e["end"])}
                                       for e in entities]}


def summary_line(text: str, prediction: dict) -> str:
    if "generated_text" in prediction:
        return f"**{prediction.get('prompt', text)}**{prediction['generated_text']}"
    if "label" in prediction:
        return f"`{text}` → **{prediction['label']}** ({prediction.get('score', 0):.3f})"
    if "labels" in prediction:
        return f"`{text}` → **{', '.join(prediction['labels']) or '(no label above its threshold)'}**"
    if "score" in prediction:
        return f"`{text}` → score **{prediction['score']:.4f}**"
    if "entities" in prediction:
        found = ", ".join(f"{e['text']} ({e['entity']})" for e in prediction["entities"]) or "no entities"
        return f"`{text}` → {found}"
    if "masks" in prediction:
        return f"`{text}` → " + "; ".join(" / ".join(m["token"] for m in mask[:3]) for mask in prediction["masks"])
    return f"`{text}`"


def build(context, pages: dict) -> None:
    gr.Markdown("Predictions of a finished run, loaded as `hftl predict` loads it (remote code and pickle off).")
    with gr.Row():
        run_id = gr.Dropdown(choices=[], label="Finished run", allow_custom_value=True, elem_id="try-run", scale=4)
        load = gr.Button("Load", scale=0, elem_id="try-load")
    about = gr.Markdown(elem_id="try-about")
    with gr.Row():
        with gr.Column():
            texts = gr.Textbox(label="Inputs, one per line", lines=4, elem_id="try-inputs")
            image = gr.Image(label="Image", type="filepath", visible=False, elem_id="try-image")
            with gr.Row(visible=False) as generation:
                max_new = gr.Slider(1, 256, value=30, step=1, label="max new tokens")
                sample = gr.Checkbox(label="sample (seed 0)", value=False)
            go = gr.Button("Predict", variant="primary", elem_id="try-predict")
        with gr.Column():
            lines = gr.Markdown(elem_id="try-result")
            bars = gr.Label(label="Probabilities (first input)", visible=False, elem_id="try-bars")
            spans = gr.HighlightedText(label="Entities (first input)", visible=False, elem_id="try-spans")
            raw = gr.JSON(label="Predictions (as hftl predict writes them)", elem_id="try-raw")

    def describe(rid):
        hidden = (gr.update(visible=False),) * 2
        if not rid:
            return "Choose a finished run.", gr.update(visible=True), *hidden
        try:
            loaded = context.loaded_run(rid)
        except (HftlError, OSError, ValueError) as err:
            return f"**Cannot load {rid}:** {message(err)}", gr.update(visible=True), *hidden
        recipe = loaded.recipe
        labels = f"; labels: {', '.join(loaded.labels.names)}" if getattr(loaded, "labels", None) else ""
        kind = "images" if recipe.inputs_are_paths else "text"
        text = f"**{rid}**: {recipe.title} ({recipe.task}), takes {kind}{labels}."
        return (text, gr.update(visible=not recipe.inputs_are_paths), gr.update(visible=recipe.inputs_are_paths),
                gr.update(visible=bool(recipe.generates_text)))

    def predict(rid, text_value, image_path, max_new_tokens, do_sample):
        nothing = (gr.update(visible=False), gr.update(visible=False), None)
        try:
            loaded = context.loaded_run(rid)
            recipe = loaded.recipe
            if recipe.inputs_are_paths:
                if not image_path:
                    return ("Upload an image first.", *nothing)
                inputs = [image_path]
            else:
                inputs = [line for line in (text_value or "").splitlines() if line.strip()][:MAX_INPUTS]
                if not inputs:
                    return ("Type an input first.", *nothing)
            kwargs = {}
            if recipe.generates_text:
                kwargs = {"max_new_tokens": int(max_new_tokens), "sample": bool(do_sample),
                          "seed": 0 if do_sample else None}
            predictions = loaded.predict(inputs, **kwargs)
        except (HftlError, OSError, ValueError) as err:
            return (f"**Failed:** {message(err)}", *nothing)
        shown = ["image" if recipe.inputs_are_paths else i for i in inputs]
        first_bars, first_spans = label_bars(predictions[0]), highlighted(inputs[0], predictions[0])
        return ("\n\n".join(summary_line(t, p) for t, p in zip(shown, predictions)),
                gr.update(value=first_bars, visible=first_bars is not None),
                gr.update(value=first_spans, visible=first_spans is not None),
                predictions)

    run_id.focus(lambda: gr.update(choices=context.run_ids(finished_only=True)), None, run_id)
    run_id.change(describe, run_id, [about, texts, image, generation])
    load.click(describe, run_id, [about, texts, image, generation])
    go.click(predict, [run_id, texts, image, max_new, sample], [lines, bars, spans, raw])
    pages["try.id"] = run_id
