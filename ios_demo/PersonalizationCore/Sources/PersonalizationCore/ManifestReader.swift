import Foundation

/// The typed reading of a manifest that `manifestProblems` found sound (so every value has the
/// type the SDK checks), plus what a phone relies on that the SDK guarantees by writing it
/// itself: every phase gives a rank (or a soft mask) to every mask input's slot, the
/// trainable tensors are float32 (what this app's trainers copy in and out), and labels use the
/// contract's ignore index (the graphs were exported with it).
struct ManifestReader {
    static let dtypeFloat32 = "float32"
    let d: JSONObject

    init(_ d: JSONObject) { self.d = d }

    func read(_ problems: inout [String]) -> Manifest? {
        let spec = BundleInputSpec.read(d[Contract.Key.inputSpec]!.object!)
        let trainable = d[Contract.Key.trainable]!.array!.map { e -> Trainable in
            let o = e.object!
            return Trainable(
                name: o[Contract.TrainableKey.name]!.string!, module: o[Contract.TrainableKey.module]!.string!,
                slot: o[Contract.TrainableKey.slot]!.string!, role: o[Contract.TrainableKey.role]!.string!,
                param: o[Contract.TrainableKey.param]!.string!, shape: o[Contract.TrainableKey.shape]!.array!.map { $0.int! },
                dtype: o[Contract.TrainableKey.dtype]!.string!)
        }
        let performanceModel = d[Contract.Key.performanceModel]?.object
        guard let parsed = try? RankSchedule.read(d[Contract.Key.rankSchedule], where: Contract.Key.rankSchedule) else {
            return nil // manifestProblems read it already; unreachable for a manifest it passed
        }
        // A bundle's schedule carries its performance model at the top level (as Manifest.from_dict).
        let schedule = parsed.with(performanceModel: performanceModel)
        for (i, t) in trainable.enumerated() where t.dtype != ManifestReader.dtypeFloat32 {
            problems.append("\(Contract.Key.trainable)[\(i)].\(Contract.TrainableKey.dtype) is \(Py.repr(t.dtype)); this app trains \(ManifestReader.dtypeFloat32) adapter tensors only")
        }
        if spec.tokenIds.ignoreIndex != Contract.ignoreIndex {
            problems.append("\(Contract.Key.inputSpec).\(Contract.InputSpecKey.tokenIds).\(Contract.TokenIdKey.ignoreIndex) is \(spec.tokenIds.ignoreIndex); " +
                "the graphs score labels against \(Contract.ignoreIndex), re-export the bundle")
        }
        checkMasks(schedule, &problems)
        let files = d[Contract.Key.files]!.array!.map { e in
            FileEntry(path: e[Contract.FileKey.path]!.string!, sha256: e[Contract.FileKey.sha256]!.string!, size: e[Contract.FileKey.size]!.int!)
        }
        let opt = d[Contract.Key.optimizer]!.object!
        let optimizer = OptimizerSpec(name: opt[Contract.OptimizerKey.name]!.string!, lr: opt[Contract.OptimizerKey.lr]!.number!, raw: opt)
        if !problems.isEmpty { return nil }
        return Manifest(
            format: d[Contract.Key.format]!.string!,
            sdkVersion: d[Contract.Key.sdkVersion]!.string!,
            model: d[Contract.Key.model]!.object!,
            inputSpec: spec,
            methods: d[Contract.Key.methods]!.object!,
            trainable: trainable,
            schedule: schedule,
            performanceModel: performanceModel,
            optimizer: optimizer,
            backbone: d[Contract.Key.backbone]!.object!,
            files: files,
            raw: d
        )
    }

    /// Every phase gives each mask input's slot a rank or a soft mask (the SDK checks modules, not slots).
    private func checkMasks(_ schedule: RankSchedule, _ problems: inout [String]) {
        for (j, m) in schedule.maskInputs.enumerated() {
            for (i, p) in schedule.phases.enumerated() where p.masks[m.module]?[m.slot] == nil && p.ranks[m.module]?[m.slot] == nil {
                problems.append("\(Contract.Key.rankSchedule).\(Contract.ScheduleKey.phases)[\(i)] gives no rank for \(m.module).\(m.slot) (mask input \(j))")
            }
        }
    }
}
