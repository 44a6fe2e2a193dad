package org.mobilepeft.core

import java.io.IOException

/**
 * Every error the core raises on purpose implements this (mobile_peft/core/errors.py
 * `MobilePeftError`); each class also extends the built-in exception it refines, so a caller that
 * does not know this package can still catch `IllegalArgumentException` / `IOException`.
 * Messages say what was given, what was expected and what to do about it.
 */
interface MobilePeftError

/** A configuration value that cannot work (Python: `ConfigError`). */
open class ConfigError(message: String) : IllegalArgumentException(message), MobilePeftError

/** A data set or a data file (annotations, tokenizer.json, an image) is malformed (Python: `DataError`). */
open class DataError(message: String) : IllegalArgumentException(message), MobilePeftError

/** A tokenizer.json whose model, normalizer or pre-tokenizer this core does not implement. */
class UnsupportedTokenizerError(message: String) : DataError(message)

/** A checkpoint or adapter directory is missing files or unreadable (Python: `CheckpointError`). */
class CheckpointError(message: String, cause: Throwable? = null) : IOException(message, cause), MobilePeftError

/**
 * A bundle or its manifest fails validation; [problems] lists every problem, not only the first
 * (Python: `BundleError`, same message layout).
 */
class BundleError(val source: String, val problems: List<String>) :
    IllegalArgumentException("bundle $source is invalid:\n  - " + problems.joinToString("\n  - ")), MobilePeftError

/** Training produced non-finite losses, gradients or weights too often to go on (Python: `DivergedError`). */
class DivergedError(message: String) : ArithmeticException(message), MobilePeftError
