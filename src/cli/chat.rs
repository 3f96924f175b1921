//! `lumen chat`: an interactive conversation in the terminal, in the manner of `ollama run`.
//!
//! Each answer streams as it is generated; Ctrl-C stops the answer, not the session. History is
//! kept while it fits the context; the oldest turns are dropped (with a notice) when it does not.
//! The KV cache keeps the part of the prompt that did not change, so a new turn only evaluates
//! the last answer and the new message.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use lumen::chat::{ChatMessage, Content, ContentPart, Conversation, RenderOptions};
use lumen::generate::{generate, Flow, GenerateParams, GenerateStats};
use lumen::model::{Cache, EncodedImage, Model};
use rustyline::error::ReadlineError;

use super::load::{kv_cache, load_model, thread_pool, LoadedModel};

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model", env = "LUMEN_MODEL")]
    model: PathBuf,
    /// System prompt.
    #[arg(long = "system", env = "LUMEN_SYSTEM")]
    system: Option<String>,
    /// Jinja chat template to use instead of the model's.
    #[arg(long = "chat-template-file", env = "LUMEN_CHAT_TEMPLATE_FILE")]
    chat_template_file: Option<PathBuf>,
    /// Context size in tokens.
    #[arg(
        short = 'c',
        long = "ctx-size",
        env = "LUMEN_CTX_SIZE",
        default_value_t = 4096
    )]
    ctx_size: usize,
    /// Most tokens per answer (-1 = until the end of the turn).
    #[arg(short = 'n', long = "n-predict", env = "LUMEN_N_PREDICT", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", env = "LUMEN_THREADS")]
    threads: Option<usize>,
    #[command(flatten)]
    sampling: super::load::SamplingArgs,
    /// Timing statistics after each answer, in Ollama's wording.
    #[arg(long = "verbose", env = "LUMEN_VERBOSE")]
    verbose: bool,
    /// Print each rendered prompt before answering.
    #[arg(long = "verbose-prompt", env = "LUMEN_VERBOSE_PROMPT")]
    verbose_prompt: bool,
}

const HELP: &str = "\
Available commands:
  /set system <text>     set the system prompt (clears the history)
  /set temp <value>      sampling temperature (also: /set parameter temperature <value>)
  /set parameter <name> <value>
                         temperature, top_k, top_p, min_p, repeat_penalty, seed, num_predict
  /set verbose | quiet   show or hide timing statistics
  /show system | parameters
  /image <path>          attach an image to the next message (vision models)
  /clear                 forget the conversation (keeps the system prompt)
  /bye                   leave (also /exit, Ctrl-D)
  /help, /?              this help
Start and end a message with \"\"\" to write several lines.
Ctrl-C stops an answer.";

/// What the user's line asked for.
enum Input {
    Message(String),
    Handled,
    Quit,
}

/// An image run through the vision encoder once, kept for every later turn that shows it.
struct Session {
    loaded: LoadedModel,
    pool: rayon::ThreadPool,
    template: lumen::chat::ChatTemplate,
    conv: Conversation,
    params: GenerateParams,
    n_ctx: usize,
    verbose: bool,
    verbose_prompt: bool,
    /// The text model's cache, kept between turns.
    cache: Option<Cache>,
    /// Tokens whose keys and values are in `cache` (text models).
    cached: Vec<u32>,
    /// Images of the conversation, in order (vision models).
    images: Vec<EncodedImage>,
    /// Images given with /image for the next message.
    pending: Vec<EncodedImage>,
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let (pool, threads) = thread_pool(args.threads)?;
    let loaded = load_model(&args.model, true)?;
    let template = loaded.chat_template(args.chat_template_file.as_deref())?;
    let n_ctx = args.ctx_size.max(16);
    let kv = kv_cache(&*loaded.model, n_ctx, 1)?;
    eprintln!("{} | {kv}", loaded.summary(threads));
    // Vision models rebuild their cache each turn (images are attached first).
    let cache = match loaded.model.vision() {
        None => Some(loaded.model.new_cache(n_ctx)),
        Some(_) => None,
    };
    let mut session = Session {
        template,
        conv: Conversation {
            system: args.system.clone(),
            turns: Vec::new(),
        },
        params: GenerateParams {
            n_predict: usize::try_from(args.n_predict).ok(),
            sampling: args.sampling.params(),
        },
        n_ctx,
        verbose: args.verbose,
        verbose_prompt: args.verbose_prompt,
        cache,
        cached: Vec::new(),
        images: Vec::new(),
        pending: Vec::new(),
        loaded,
        pool,
    };

    // Ctrl-C while an answer streams stops that answer; at the prompt the line editor sees it
    // as a key (raw mode), so the session goes on.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    let mut editor = rustyline::DefaultEditor::new()?;
    eprintln!("Type a message, /? for help, /bye to leave.");
    loop {
        let input = match read_input(&mut editor)? {
            Some(text) => handle_line(&mut session, text.trim()),
            None => Input::Quit,
        };
        match input {
            Input::Quit => break,
            Input::Handled => continue,
            Input::Message(text) => {
                interrupted.store(false, Ordering::SeqCst);
                if let Err(e) = session.answer(&text, &interrupted) {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    Ok(())
}

/// Reads one message: a line, or several between `"""` markers. None at end of input.
fn read_input(editor: &mut rustyline::DefaultEditor) -> anyhow::Result<Option<String>> {
    let first = loop {
        match editor.readline(">>> ") {
            Ok(line) => break line,
            Err(ReadlineError::Interrupted) => {
                eprintln!("Use Ctrl + d or /bye to exit.");
            }
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    let Some(rest) = first.trim_start().strip_prefix("\"\"\"") else {
        let _ = editor.add_history_entry(first.as_str());
        return Ok(Some(first));
    };
    if let Some(one_line) = rest.strip_suffix("\"\"\"") {
        return Ok(Some(one_line.to_string()));
    }
    let mut lines = vec![rest.to_string()];
    loop {
        match editor.readline("... ") {
            Ok(line) => match line.strip_suffix("\"\"\"") {
                Some(last) => {
                    lines.push(last.to_string());
                    break;
                }
                None => lines.push(line),
            },
            Err(ReadlineError::Interrupted) => return Ok(Some(String::new())),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(lines.join("\n").trim_start_matches('\n').to_string()))
}

fn handle_line(s: &mut Session, line: &str) -> Input {
    if line.is_empty() {
        return Input::Handled;
    }
    if !line.starts_with('/') {
        return Input::Message(line.to_string());
    }
    let mut words = line.splitn(3, char::is_whitespace);
    let command = words.next().unwrap_or_default();
    let arg1 = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim();
    match command {
        "/bye" | "/exit" => return Input::Quit,
        "/help" | "/?" => println!("{HELP}"),
        "/clear" => {
            s.conv.clear();
            println!("Cleared session context");
        }
        "/show" => match arg1 {
            "system" => println!(
                "{}",
                s.conv.system.as_deref().unwrap_or("(no system prompt)")
            ),
            "parameters" => println!("{}", describe(&s.params)),
            _ => println!("Usage: /show system | parameters"),
        },
        "/set" => set(s, arg1, rest),
        "/image" => {
            let path = [arg1, rest].join(" ");
            match s.add_image(path.trim()) {
                Ok(note) => println!("{note}"),
                Err(e) => println!("error: {e:#}"),
            }
        }
        _ => println!("Unknown command '{command}'. Type /? for help"),
    }
    Input::Handled
}

fn set(s: &mut Session, what: &str, rest: &str) {
    match what {
        "system" => {
            s.conv.system = (!rest.is_empty()).then(|| rest.to_string());
            s.conv.clear();
            println!("Set system message.");
        }
        "verbose" => {
            s.verbose = true;
            println!("Set 'verbose' mode.");
        }
        "quiet" => {
            s.verbose = false;
            println!("Set 'quiet' mode.");
        }
        "parameter" => {
            let mut it = rest.splitn(2, char::is_whitespace);
            let (name, value) = (
                it.next().unwrap_or_default(),
                it.next().unwrap_or("").trim(),
            );
            set_parameter(s, name, value);
        }
        // Short forms: `/set temp 0.7`, `/set top_k 20`.
        name => set_parameter(s, name, rest),
    }
}

fn set_parameter(s: &mut Session, name: &str, value: &str) {
    let p = &mut s.params.sampling;
    let ok = match name {
        "temp" | "temperature" => value.parse().map(|v| p.temperature = v).is_ok(),
        "top_k" | "top-k" => value.parse().map(|v| p.top_k = v).is_ok(),
        "top_p" | "top-p" => value.parse().map(|v| p.top_p = v).is_ok(),
        "min_p" | "min-p" => value.parse().map(|v| p.min_p = v).is_ok(),
        "repeat_penalty" => value.parse().map(|v| p.repeat_penalty = v).is_ok(),
        "seed" => value.parse().map(|v| p.seed = v).is_ok(),
        "num_predict" => value
            .parse::<i64>()
            .map(|v| s.params.n_predict = usize::try_from(v).ok())
            .is_ok(),
        _ => {
            println!("Unknown parameter '{name}'. Type /? for help");
            return;
        }
    };
    if ok {
        println!("Set parameter '{name}' to '{value}'");
    } else {
        println!("Couldn't set parameter '{name}': '{value}' is not a valid value");
    }
}

fn describe(params: &GenerateParams) -> String {
    let p = &params.sampling;
    format!(
        "temperature {}\ntop_k {}\ntop_p {}\nmin_p {}\nrepeat_penalty {}\nseed {}\nnum_predict {}",
        p.temperature,
        p.top_k,
        p.top_p,
        p.min_p,
        p.repeat_penalty,
        p.seed,
        params.n_predict.map_or(-1, |n| n as i64)
    )
}

impl Session {
    /// Encodes an image for the next message.
    fn add_image(&mut self, path: &str) -> anyhow::Result<String> {
        let Some(vision) = self.loaded.model.vision() else {
            anyhow::bail!(
                "{} is a text-only model; images need a vision model (mllama)",
                self.loaded.path.display()
            );
        };
        anyhow::ensure!(!path.is_empty(), "usage: /image <path>");
        let start = Instant::now();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read image {path}"))?;
        let image = self.pool.install(|| vision.encode_image(&bytes, path))?;
        let n_tiles = image.n_tiles;
        self.pending.push(image);
        Ok(format!(
            "Added image '{path}' ({n_tiles} tile(s), encoded in {:.1} s)",
            start.elapsed().as_secs_f64()
        ))
    }

    /// Adds the user's message (with the pending images), streams the answer to stdout and
    /// keeps it in the history.
    fn answer(&mut self, text: &str, interrupted: &AtomicBool) -> anyhow::Result<()> {
        let start = Instant::now();
        let content = if self.pending.is_empty() {
            Content::Text(text.to_string())
        } else {
            let images = self.pending.iter().map(|_| ContentPart::Image);
            let text = ContentPart::Text {
                text: text.to_string(),
            };
            Content::Parts(images.chain([text]).collect())
        };
        self.conv.turns.push(ChatMessage {
            role: "user".into(),
            content,
        });
        let n_new_images = self.pending.len();
        self.images.append(&mut self.pending);
        let reserve = self
            .params
            .n_predict
            .unwrap_or(self.n_ctx / 4)
            .min(self.n_ctx / 2);
        let tokenizer = &self.loaded.tokenizer;
        let fitted = self.conv.fit(
            &self.template,
            &RenderOptions {
                add_generation_prompt: true,
                date_string: None,
                ..Default::default()
            },
            self.n_ctx,
            reserve,
            &mut |t| Ok(tokenizer.encode(t, false)?),
        );
        let fitted = match fitted {
            Ok(f) => f,
            Err(e) => {
                self.conv.turns.pop();
                let kept = self.images.len() - n_new_images;
                self.images.truncate(kept);
                return Err(e);
            }
        };
        if fitted.dropped_turns > 0 {
            eprintln!(
                "(dropped the {} oldest turn(s) to fit the context of {} tokens)",
                fitted.dropped_turns, self.n_ctx
            );
            // Images of dropped turns are no longer shown; the newest ones stay.
            let shown = images_in(&self.conv);
            self.images
                .drain(..self.images.len() - shown.min(self.images.len()));
        }
        if self.verbose_prompt {
            eprintln!("{}", tokenizer.decode(&fitted.ids));
        }

        let mut answer = String::new();
        let mut on_text = |piece: &str| {
            answer.push_str(piece);
            let mut stdout = std::io::stdout();
            let _ = stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush());
            if interrupted.load(Ordering::SeqCst) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        let (pool, params) = (&self.pool, &self.params);
        let model = &*self.loaded.model;
        let stats = match model.vision() {
            None => {
                let cache = self
                    .cache
                    .get_or_insert_with(|| model.new_cache(self.n_ctx));
                let new_tokens = reuse_cache(cache, &self.cached, &fitted.ids);
                let stats = pool.install(|| {
                    stream_answer(model, tokenizer, cache, new_tokens, params, &mut on_text)
                });
                // The cache now also holds the answer's tokens; keep only the prompt, whose
                // tokens we know: the next turn re-reads the answer as the template renders it.
                cache.truncate(fitted.ids.len().min(cache.len()));
                self.cached = fitted.ids.clone();
                stats
            }
            Some(_) => pool.install(|| {
                answer_with_images(
                    model,
                    tokenizer,
                    &self.images,
                    self.n_ctx,
                    &fitted.ids,
                    params,
                    &mut on_text,
                )
            }),
        };
        println!();
        let stats = match stats {
            Ok(stats) => stats,
            Err(e) => {
                self.conv.turns.pop();
                return Err(e);
            }
        };
        self.conv
            .turns
            .push(ChatMessage::text("assistant", answer.trim_end()));
        if self.verbose {
            eprintln!(
                "{}",
                ollama_stats(&stats, start.elapsed(), self.loaded.load_time)
            );
        }
        Ok(())
    }
}

fn stream_answer(
    model: &dyn Model,
    tokenizer: &lumen::tokenizer::Tokenizer,
    cache: &mut Cache,
    ids: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> anyhow::Result<GenerateStats> {
    Ok(generate(model, tokenizer, cache, ids, params, on_text)?)
}

/// A vision model's turn: a fresh cache with the conversation's images attached in order,
/// then the whole prompt (its `<|image|>` tokens bind to them).
fn answer_with_images(
    model: &dyn Model,
    tokenizer: &lumen::tokenizer::Tokenizer,
    images: &[EncodedImage],
    n_ctx: usize,
    ids: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> anyhow::Result<GenerateStats> {
    let vision = model.vision().context("not a vision model")?;
    let image_token = vision.image_token();
    let n_tokens = ids.iter().filter(|&&t| t == image_token).count();
    anyhow::ensure!(
        n_tokens == images.len(),
        "the rendered prompt has {n_tokens} image token(s) for {} image(s); does the chat template place images?",
        images.len()
    );
    let mut cache = model.new_cache(n_ctx);
    for image in images {
        vision.attach_encoded(&mut cache, image)?;
    }
    stream_answer(model, tokenizer, &mut cache, ids, params, on_text)
}

/// How many images the conversation's messages show.
fn images_in(conv: &Conversation) -> usize {
    conv.turns
        .iter()
        .map(|m| match &m.content {
            Content::Parts(parts) => parts.iter().filter(|p| **p == ContentPart::Image).count(),
            Content::Text(_) => 0,
        })
        .sum()
}

/// Keeps the part of `cache` (holding `cached`) that `ids` start with, and returns the tokens
/// still to evaluate (at least one, so there are logits to sample from).
fn reuse_cache<'a>(cache: &mut Cache, cached: &[u32], ids: &'a [u32]) -> &'a [u32] {
    let common = cached
        .iter()
        .zip(ids)
        .take_while(|(a, b)| a == b)
        .count()
        .min(ids.len().saturating_sub(1))
        .min(cache.len());
    cache.truncate(common);
    &ids[common..]
}

/// Ollama's `--verbose` block.
fn ollama_stats(
    stats: &GenerateStats,
    total: std::time::Duration,
    load: std::time::Duration,
) -> String {
    format!(
        "total duration:       {:.2?}\n\
         load duration:        {:.2?}\n\
         prompt eval count:    {} token(s)\n\
         prompt eval duration: {:.2?}\n\
         prompt eval rate:     {:.2} tokens/s\n\
         eval count:           {} token(s)\n\
         eval duration:        {:.2?}\n\
         eval rate:            {:.2} tokens/s",
        total,
        load,
        stats.n_prompt,
        stats.prompt_time,
        stats.prompt_tokens_per_second(),
        stats.n_generated,
        stats.generation_time,
        stats.generation_tokens_per_second(),
    )
}
