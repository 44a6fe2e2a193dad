package org.mobilepeft.demo

import android.os.Debug
import java.io.File
import org.mobilepeft.core.AdapterFiles
import org.mobilepeft.core.Batch
import org.mobilepeft.core.CheckpointStore
import org.mobilepeft.core.Checksums
import org.mobilepeft.core.ConfigError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Encoded
import org.mobilepeft.core.Encoder
import org.mobilepeft.core.EvalSet
import org.mobilepeft.core.Evaluate
import org.mobilepeft.core.FolderDataset
import org.mobilepeft.core.FolderExample
import org.mobilepeft.core.Json
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.Py
import org.mobilepeft.core.StopReason
import org.mobilepeft.core.TrainListener
import org.mobilepeft.core.TrainOptions
import org.mobilepeft.core.TrainResult
import org.mobilepeft.core.TrainerFactory
import org.mobilepeft.core.TrainingLoop
import org.mobilepeft.core.WordLevelTokenizer

/**
 * One training run of a bundle on the owner's data folder, as `mobile-peft train BUNDLE --data
 * FOLDER --seed 0` runs it, reporting into [TrainingMonitor]. Everything but the engines and the
 * image decoder is the core: bundle validation (every file's sha256), the folder reader and its
 * train/eval split by image, encoding, the loop (resume, cancel, checkpoints, NaN handling,
 * on-device re-allocation, eval before/after) and the PEFT adapter writer.
 *
 * A run lives in `<runsRoot>/<bundle name>-<manifest sha256 prefix>/` (`checkpoints/`, and the
 * personal adapter's `adapter_config.json` + `adapter_model.safetensors` at the end), locked by
 * [RunLock] while it trains; it resumes from its newest checkpoint.
 */
class TrainingJob(
    private val bundleDir: File,
    private val dataDir: File,
    private val runsRoot: File,
    private val totalSteps: Int,
    private val cancelled: () -> Boolean,
) {
    private fun say(line: String) = TrainingMonitor.update { it.logged(line) }

    fun runDir(manifestSha: String): File = File(runsRoot, "${bundleDir.name}-${manifestSha.take(12)}")

    fun run(): TrainResult {
        TrainingMonitor.update { TrainingStatus(RunPhase.PREPARING, bundle = bundleDir.name, totalSteps = totalSteps, message = "checking the bundle", log = it.log) }
        val manifest = Manifest.validateBundle(bundleDir) // structure, types, every file's size + sha256
        if (manifest.format != Contract.FORMAT_PTE && manifest.format != Contract.FORMAT_ONNX) {
            throw ConfigError("format ${Py.repr(manifest.format)} does not train on Android (Core ML bundles are iOS-only); export pte or onnx.")
        }
        say("bundle ${bundleDir.name}: ${manifest.format}, ${manifest.trainable.size} trainable tensors, ${manifest.schedule.maskInputs.size} rank masks, " +
            "${manifest.schedule.phases.size} phases, optimizer ${manifest.optimizer.name} lr ${manifest.optimizer.lr}; sha256 ok")
        val encoder = Encoder(manifest.inputSpec, WordLevelTokenizer.load(File(bundleDir, manifest.inputSpec.tokenizerFile)))

        TrainingMonitor.update { it.copy(message = "reading ${dataDir.path}") }
        // Each image is decoded and encoded once (to [3, S, S]) while the folder is read; the photo itself is dropped.
        val pixels = HashMap<String, FloatArray>()
        val check = { f: File -> if (f.path !in pixels) pixels[f.path] = encoder.image(AndroidImages.decode(f)) }
        val skipped = mutableListOf<String>()
        val train = FolderDataset.load(dataDir, FolderDataset.SPLIT_TRAIN, SEED, checkImage = check, skipBad = true, skipped = skipped)
        val held = FolderDataset.load(dataDir, FolderDataset.SPLIT_EVAL, SEED, checkImage = check, skipBad = true)
        skipped.forEach { say("skipped $it") }
        say("${train.size} training and ${held.size} held-out examples (split by image, seed $SEED, as the SDK's)")
        val trainBatches = batches(encoder, train, pixels)
        val evalBatches = batches(encoder, held, pixels)

        val manifestSha = Checksums.sha256Of(File(bundleDir, Contract.MANIFEST_FILE))
        val runDir = runDir(manifestSha)
        RunLock.acquire(runDir).use {
            val onnx = manifest.format == Contract.FORMAT_ONNX
            val realloc = manifest.schedule.performanceModel != null && !onnx
            if (manifest.schedule.performanceModel != null && onnx) {
                say("this bundle ships a performance model, but on-device re-allocation needs the gradients, which ONNX Runtime's Java API cannot read: ranks follow the shipped schedule")
            } else if (realloc) {
                say("on-device re-allocation on: the bundle's performance model re-decides the ranks every ${maxOf(1, totalSteps / 3)} steps")
            }
            val options = TrainOptions(
                totalSteps,
                checkpointEvery = if (onnx) OrtTrainer.CHECKPOINT_EVERY else CHECKPOINT_EVERY,
                seed = SEED,
                onDeviceRealloc = realloc,
            )
            val store = CheckpointStore(runDir)
            val factory = TrainerFactory { from ->
                if (onnx) OrtTrainer.open(manifest, bundleDir, from) else EtTrainer.open(manifest, bundleDir, from)
            }
            val loop = TrainingLoop(
                manifest.schedule, manifestSha, train.size, manifest.inputSpec.batchSize, trainBatches, options, store, factory,
                cancelled = cancelled, listener = Listener(), trainable = manifest.trainable,
                evalSet = EvalSet(held.size, evalBatches, manifest.inputSpec.tokenIds.ignoreIndex),
            )
            // A resumed run (a new process after a kill, or Train after Cancel) shows the losses it already has.
            val done = runCatching { store.latest()?.let { (store.meta(it)[TrainingLoop.LOSSES] as? List<*>)?.map { v -> Py.toFloat(v).toFloat() } } }.getOrNull().orEmpty()
            TrainingMonitor.update {
                it.copy(phase = RunPhase.EVALUATING, step = done.size, losses = done, trainExamples = train.size, evalExamples = held.size, message = "accuracy before training")
            }
            val result = loop.run(resume = true)
            result.resumedFrom?.let { say("resumed at step $it") }
            val adapter = if (result.parameters.isNotEmpty()) {
                val files = AdapterFiles.effectiveAdapter(manifest.schedule, manifest.trainable, manifest.sdkVersion, result.parameters, result.masks)
                AdapterFiles.write(runDir, files).also { say("personal adapter (PEFT): ${File(it, AdapterFiles.CONFIG_FILE).path} + ${AdapterFiles.WEIGHTS_FILE}") }
            } else {
                null
            }
            val phase = if (result.stop == StopReason.CANCELLED) RunPhase.CANCELLED else RunPhase.DONE
            TrainingMonitor.update {
                it.copy(
                    phase = phase, step = result.step, losses = result.losses, adapterDir = adapter,
                    accuracyBefore = result.evalBefore?.accuracy ?: it.accuracyBefore, accuracyAfter = result.evalAfter?.accuracy,
                    message = if (phase == RunPhase.CANCELLED) "stopped at step ${result.step}; Train resumes" else "done: ${result.step} steps",
                )
            }
            return result
        }
    }

    /** The batch function of [examples]: fixed-size batches of encoded rows (texts encoded up front, so a too-long line fails now). */
    private fun batches(encoder: Encoder, examples: List<FolderExample>, pixels: Map<String, FloatArray>): (IntArray) -> Batch {
        val rows = examples.map { e ->
            val (ids, labels) = encoder.text(e.question, e.answer, e.source)
            Encoded(pixels.getValue(e.image.path), ids, labels)
        }
        return { indices -> encoder.batch(indices.map { rows[it] }) }
    }

    /** Loss, step time and memory of every step into the monitor. */
    private inner class Listener : TrainListener {
        private var last = System.nanoTime()

        override fun onStep(step: Int, loss: Float) {
            val now = System.nanoTime()
            val ms = (now - last) / 1_000_000
            last = now
            val pss = Debug.getPss() // kB; the "TOTAL PSS" that dumpsys meminfo reports
            TrainingMonitor.update {
                it.copy(
                    phase = if (step == totalSteps) RunPhase.EVALUATING else RunPhase.TRAINING, step = step, losses = it.losses + loss,
                    lastStepMs = ms, pssKb = pss, peakPssKb = maxOf(pss, it.peakPssKb ?: 0),
                    message = if (step == totalSteps) "accuracy after training" else "training",
                )
            }
        }

        override fun onBadStep(step: Int, loss: Float, badSteps: Int) = say("step $step: loss $loss or a gradient not finite, not applied ($badSteps so far)")

        override fun onPhase(step: Int, phase: Int) = say("step $step: rank phase $phase")

        override fun onCheckpoint(step: Int, dir: File) = say("checkpoint ${dir.name}")

        override fun onRealloc(step: Int, event: Map<String, Any?>) = say("step $step: re-allocation ${Json.dumps(event)}")

        override fun onEval(step: Int, report: Evaluate.Report) {
            last = System.nanoTime() // the eval is not the next step's time
            val line = "accuracy %.1f%% (loss %.4f) on %d held-out examples at step %d".format(100 * report.accuracy, report.loss, report.examples, step)
            TrainingMonitor.update {
                val s = if (step == 0) it.copy(accuracyBefore = report.accuracy, phase = RunPhase.TRAINING, message = "training") else it.copy(accuracyAfter = report.accuracy)
                s.logged(line)
            }
        }
    }

    companion object {
        /** Checkpoint cadence of pte runs (the checkpoint is only the adapter tensors). */
        const val CHECKPOINT_EVERY = 10

        /** Seed of the split and the data order (the SDK's `--seed` default). */
        const val SEED = 0L
    }
}
